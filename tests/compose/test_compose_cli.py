"""`layerbuild compose` on the command line: -f (repeatable, and -), -p, --profile, --env-file,
COMPOSE_FILE, service selection, and errors that exit 1 (as docker compose's) without a traceback."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from tests.compose.kit import write


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("COMPOSE_")]:
        monkeypatch.delenv(key)
    write(tmp_path, {
        "compose.yaml": ("services:\n  web:\n    image: web:${TAG:-latest}\n    depends_on: [db]\n"
                         "  db: {image: db}\n  admin: {image: admin, profiles: [ops]}\n"),
        "prod.yaml": "services:\n  web: {image: 'web:prod'}\n",
        "prod.env": "TAG=from-env-file\n",
    })
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _json(capfd: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    code = main(["compose", *argv, "config", "--format", "json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_files_names_profiles_and_env_files(project: Path, capfd: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    model = _json(capfd)
    assert model["name"] == re.sub(r"[^a-z0-9_-]", "", project.name.lower()).lstrip("_-")
    assert sorted(model["services"]) == ["db", "web"]  # type: ignore[call-overload]
    assert _json(capfd, "-f", "compose.yaml", "-f", "prod.yaml")["services"]["web"]["image"] == "web:prod"  # type: ignore[index]
    assert _json(capfd, "-p", "shop")["name"] == "shop"
    assert sorted(_json(capfd, "--profile", "ops")["services"]) == ["admin", "db", "web"]  # type: ignore[call-overload]
    assert _json(capfd, "--env-file", "prod.env")["services"]["web"]["image"] == "web:from-env-file"  # type: ignore[index]
    monkeypatch.setenv("COMPOSE_FILE", f"compose.yaml{os.pathsep}prod.yaml")
    assert _json(capfd)["services"]["web"]["image"] == "web:prod"  # type: ignore[index]


def test_standard_input(project: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("services:\n  only: {image: x}\n"))
    code = main(["compose", "-f", "-", "-p", "piped", "config"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out == "name: piped\nservices:\n  only:\n    image: x\n    networks:\n      default: null\n" \
                  "networks:\n  default:\n    name: piped_default\n"


def test_selected_services_bring_their_dependencies(project: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["compose", "config", "--services", "web"])
    out, _ = capfd.readouterr()
    assert code == 0 and out == "db\nweb\n"
    code = main(["compose", "config", "nope"])
    _, err = capfd.readouterr()
    assert code == 1 and "no such service: nope" in err


@pytest.mark.parametrize(("argv", "words"), [
    (["compose"], "compose needs a command"),
    (["compose", "-f", "missing.yaml", "config"], "compose file missing.yaml not found"),
    (["compose", "-p", "Not Valid", "config"], "invalid project name 'Not Valid'"),
    (["compose", "--env-file", "gone.env", "config"], "env file gone.env not found"),
])
def test_errors_exit_1_as_docker_compose(project: Path, capfd: pytest.CaptureFixture[str], argv: list[str],
                                        words: str) -> None:
    code = main(argv)
    _, err = capfd.readouterr()
    assert code == 1 and words in err and "Traceback" not in err


def test_a_flag_not_offered_yet_is_refused_by_name(project: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = main(["compose", "build", "--pull"])  # as every refused docker flag: a usage error
    _, err = capfd.readouterr()
    assert code == 2 and "`compose build --pull` is not supported yet" in err and "Traceback" not in err


def test_version_is_obsolete_but_accepted(project: Path, capfd: pytest.CaptureFixture[str]) -> None:
    write(project, {"compose.yaml": "version: '3.8'\nservices:\n  a: {image: x}\n"})
    code = main(["compose", "config", "-q"])
    _, err = capfd.readouterr()
    assert code == 0 and "the attribute `version` is obsolete" in err


def test_dependency_cycles_and_implicit_dependencies(project: Path, capfd: pytest.CaptureFixture[str]) -> None:
    write(project, {"compose.yaml": "services:\n  a: {image: x, network_mode: 'service:b'}\n  b: {image: y}\n"})
    assert _json(capfd)["services"]["a"]["depends_on"] == {  # type: ignore[index]
        "b": {"condition": "service_started", "required": True}}
    write(project, {"compose.yaml": "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: y, links: [a]}\n"})
    code = main(["compose", "config"])
    _, err = capfd.readouterr()
    assert code == 1 and "compose.yaml:2: services.a.depends_on: dependency cycle detected: a -> b -> a" in err
