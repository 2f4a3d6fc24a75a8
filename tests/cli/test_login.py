"""`layerbuild login` / `logout` against real registries: credentials checked first, then kept in
docker's config.json (mode 0600) or a credential helper, and used by the client afterwards."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.reference import parse_reference
from layerbuild.registry import RegistryClient
from tests.registry.helper import helper_store, install_helper
from tests.registry.kit import Registry, free_port

pytestmark = pytest.mark.integration


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path / "docker" / "config.json"


def login(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, registry: Registry, password: str,
          *extra: str) -> tuple[int, str, str]:
    if registry.certs_dir is not None:
        monkeypatch.setenv("LAYERBUILD_CERTS_DIRS", str(registry.certs_dir))
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    code = main(["login", "-u", registry.user, "--password-stdin", *extra, registry.host])
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind", ["tls_registry", "token_registry"])
def test_login_then_use_then_logout(kind: str, request: pytest.FixtureRequest, docker_config: Path,
                                    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry = request.getfixturevalue(kind)
    code, out, err = login(capfd, monkeypatch, registry, registry.password)
    assert (code, out.strip()) == (0, "Login Succeeded"), err
    assert "stored unencrypted" in err
    data = json.loads(docker_config.read_text())
    auth = data["auths"][registry.host]["auth"]
    assert base64.b64decode(auth).decode() == f"{registry.user}:{registry.password}"
    assert stat.S_IMODE(docker_config.stat().st_mode) == 0o600
    assert registry.password not in out + err

    # the client finds the login in config.json: a push and a pull work
    ref = parse_reference(f"{registry.host}/login/app:1")
    with RegistryClient() as client:
        assert client.upload_blob(ref, sha(b"x"), 1, b"x") in ("uploaded", "exists")
        assert client.get_blob(ref, sha(b"x")) == b"x"

    assert main(["logout", registry.host]) == 0
    assert capfd.readouterr().out.strip() == f"Removing login credentials for {registry.host}"
    assert registry.host not in json.loads(docker_config.read_text())["auths"]
    assert main(["logout", registry.host]) == 0
    assert capfd.readouterr().out.strip() == f"Not logged in to {registry.host}"


@pytest.mark.parametrize("kind", ["tls_registry", "token_registry"])
def test_wrong_password_is_refused_and_nothing_is_kept(kind: str, request: pytest.FixtureRequest,
                                                       docker_config: Path, capfd: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry = request.getfixturevalue(kind)
    wrong = "Wr0ng-password-for-test"
    code, out, err = login(capfd, monkeypatch, registry, wrong)
    assert code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    assert "login" in err and wrong not in out + err
    assert not docker_config.exists()


def test_login_through_a_credential_helper(token_registry: Registry, docker_config: Path, tmp_path: Path,
                                           capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    install_helper(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("LBTEST_HELPER_STORE", str(tmp_path / "store.json"))
    docker_config.parent.mkdir(parents=True)
    docker_config.write_text(json.dumps({"credsStore": "lbtest"}))
    code, _, err = login(capfd, monkeypatch, token_registry, token_registry.password)
    assert code == 0, err
    assert "unencrypted" not in err
    assert helper_store(tmp_path / "store.json") == {token_registry.host: [token_registry.user,
                                                                          token_registry.password]}
    assert token_registry.password not in docker_config.read_text()
    ref = parse_reference(f"{token_registry.host}/login/helper:1")
    with RegistryClient() as client:  # the login comes from the helper
        assert client.upload_blob(ref, sha(b"y"), 1, b"y") in ("uploaded", "exists")
        assert client.get_blob(ref, sha(b"y")) == b"y"
    assert main(["logout", token_registry.host]) == 0
    assert helper_store(tmp_path / "store.json") == {}


def test_password_flag_warns(plain_registry: Registry, docker_config: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["login", "-u", "anyone", "-p", "anything", plain_registry.host]) == 0
    out, err = capfd.readouterr()
    assert "Use --password-stdin" in err and out.strip() == "Login Succeeded"


def test_usage_errors(docker_config: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["login", "--password-stdin", "127.0.0.1:5000"]) == 2
    assert "--password-stdin needs --username" in capfd.readouterr().err
    assert main(["login", "127.0.0.1:5000"]) == 2
    assert "not a terminal" in capfd.readouterr().err
    assert main(["login", "-u", "a", "-p", "b", "--password-stdin", "127.0.0.1:5000"]) == 2
    capfd.readouterr()
    assert main(["login", "-u", "a", "-p", "b", "bad host!"]) == 2
    assert "invalid registry name" in capfd.readouterr().err


def test_login_to_nothing(docker_config: Path, capfd: pytest.CaptureFixture[str]) -> None:
    host = f"127.0.0.1:{free_port()}"
    assert main(["login", "-u", "a", "-p", "b", host]) == 1
    err = capfd.readouterr().err
    assert f"cannot connect to {host}: connection refused" in err and "Traceback" not in err
    assert not docker_config.exists()
