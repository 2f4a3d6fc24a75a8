"""docker's config.json and credential helpers: lookup order, the file's format and mode, real helper
processes speaking docker's protocol."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from layerbuild.errors import RegistryError
from layerbuild.registry.credentials import Credentials, DockerConfig, config_dir, config_key
from tests.registry.helper import helper_log, helper_store, install_helper


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write(path: Path, data: dict[str, object]) -> DockerConfig:
    path.write_text(json.dumps(data))
    return DockerConfig(path)


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_helper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    store = tmp_path / "helper-store.json"
    monkeypatch.setenv("LBTEST_HELPER_STORE", str(store))
    return store


def test_config_dir_follows_docker_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert config_dir() == tmp_path / "dc"
    assert DockerConfig().path == tmp_path / "dc" / "config.json"
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert DockerConfig().path == tmp_path / "home" / ".docker" / "config.json"


def test_auths_entries(tmp_path: Path) -> None:
    config = write(tmp_path / "config.json", {"auths": {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")},
        "registry.example.com": {"auth": b64("u:p:with:colons")},
        "https://ghcr.io": {"identitytoken": "refresh-xyz", "auth": b64("tok:")},
        "empty.example.com": {},
    }})
    assert config.get("docker.io") == Credentials("hubuser", "hubpass")
    assert config.get("registry.example.com") == Credentials("u", "p:with:colons")
    assert config.get("ghcr.io") == Credentials("tok", identity_token="refresh-xyz")
    assert config.get("empty.example.com") is None
    assert config.get("other.example.com") is None
    assert DockerConfig(tmp_path / "absent.json").get("docker.io") is None


def test_credentials_are_never_shown() -> None:
    creds = Credentials("user", "hunter2-secret", "tok-secret")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert "hunter2" not in text and "tok-secret" not in text and "user" not in text


def test_a_damaged_config_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        DockerConfig(tmp_path / "config.json").get("docker.io")
    bad = write(tmp_path / "c2.json", {"auths": {"r.example": {"auth": "%%%notbase64-secretish"}}})
    with pytest.raises(RegistryError) as info:
        bad.get("r.example")
    assert "notbase64" not in info.value.render()


def test_store_writes_dockers_format_atomically_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "dc" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {"https://127.0.0.1:5000/v2/": {"auth": b64("old:old")}},
                                "psFormat": "table {{.ID}}", "proxies": {"default": {}}}))
    config = DockerConfig(path)
    assert config.store("127.0.0.1:5000", Credentials("alice", "pw")) == str(path)
    assert config.store("docker.io", Credentials("bob", "pw2")) == str(path)
    data = json.loads(path.read_text())
    assert data["auths"] == {"127.0.0.1:5000": {"auth": b64("alice:pw")},
                             "https://index.docker.io/v1/": {"auth": b64("bob:pw2")}}
    assert data["psFormat"] == "table {{.ID}}" and data["proxies"] == {"default": {}}  # other keys kept
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp file left
    assert config.erase("127.0.0.1:5000") is True
    assert config.erase("127.0.0.1:5000") is False
    assert config.get("127.0.0.1:5000") is None and config.get("docker.io") == Credentials("bob", "pw2")


@pytest.mark.integration
def test_helpers_in_dockers_order(tmp_path: Path, helper: Path) -> None:
    helper.write_text(json.dumps({"https://index.docker.io/v1/": ["hub", "from-helper"],
                                  "reg.example:5000": ["<token>", "identity-from-helper"]}))
    config = write(tmp_path / "config.json", {
        "credHelpers": {"reg.example:5000": "lbtest", "docker.io": "missing-helper"},
        "auths": {"reg.example:5000": {"auth": b64("file:ignored")}, "plain.example": {"auth": b64("f:p")}},
    })
    # credHelpers[host] first: an identity token when the helper says <token>
    assert config.get("reg.example:5000") == Credentials(identity_token="identity-from-helper")
    # no helper for the host and no credsStore: auths
    assert config.get("plain.example") == Credentials("f", "p")
    # credHelpers naming a helper that is not installed: a clear error
    with pytest.raises(RegistryError, match="docker-credential-missing-helper not found"):
        config.get("docker.io")
    # credsStore for every host without its own helper; a host it lacks is anonymous
    config = write(tmp_path / "config.json", {"credsStore": "lbtest", "auths": {"plain.example": {"auth": b64("f:p")}}})
    assert config.get("docker.io") == Credentials("hub", "from-helper")
    assert config.get("plain.example") is None
    assert helper_log(helper)[-2:] == ["get https://index.docker.io/v1/", "get plain.example"]


@pytest.mark.integration
def test_store_and_erase_through_the_helper(tmp_path: Path, helper: Path) -> None:
    config = write(tmp_path / "config.json", {"credsStore": "lbtest"})
    assert config.store("127.0.0.1:5000", Credentials("alice", "pw-in-helper")) == "docker-credential-lbtest"
    assert helper_store(helper) == {"127.0.0.1:5000": ["alice", "pw-in-helper"]}
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["auths"] == {"127.0.0.1:5000": {}}  # as docker records a helper's registry
    assert "pw-in-helper" not in (tmp_path / "config.json").read_text()
    assert config.get("127.0.0.1:5000") == Credentials("alice", "pw-in-helper")
    assert config.erase("127.0.0.1:5000") is True
    assert helper_store(helper) == {}
    assert json.loads((tmp_path / "config.json").read_text())["auths"] == {}
    assert config.erase("127.0.0.1:5000") is False


def test_config_keys() -> None:
    assert config_key("docker.io") == "https://index.docker.io/v1/"
    assert config_key("localhost:5000") == "localhost:5000"
