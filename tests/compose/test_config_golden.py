"""Golden `compose config` outputs of realistic projects (tests/golden/compose/<case>/).

Each case holds its compose files and `expected.yaml` (the case's directory written as `$CASE`).
Regenerate after a deliberate change with `UPDATE_GOLDEN=1 pytest tests/compose/test_config_golden.py`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "compose"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
# The environment each case sees (the case's own .env adds to it).
ENV = {"overrides": {}, "webapp": {"NGINX_TAG": "1.27"}}
ARGS = {"overrides": ["--profile", "cache"], "webapp": []}


def _config(case_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
            *extra: str) -> tuple[int, str, str]:
    for key in [k for k in os.environ if k.startswith("COMPOSE_")]:
        monkeypatch.delenv(key)
    for key, value in ENV[case_dir.name].items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(case_dir)
    code = main(["compose", *ARGS[case_dir.name], "config", *extra])
    out, err = capfd.readouterr()
    return code, out.replace(str(case_dir), "$CASE"), err


@pytest.mark.parametrize("case", CASES)
def test_config_output(case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    case_dir = tmp_path / case  # a copy, so the absolute paths are the test's own
    shutil.copytree(GOLDEN / case, case_dir, ignore=shutil.ignore_patterns("expected.yaml"))
    code, out, err = _config(case_dir, capfd, monkeypatch)
    assert code == 0, err
    expected = GOLDEN / case / "expected.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(out)
    assert out == expected.read_text()


@pytest.mark.parametrize("case", CASES)
def test_json_output_is_the_same_model(case: str, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from ruamel.yaml import YAML

    case_dir = tmp_path / case
    shutil.copytree(GOLDEN / case, case_dir, ignore=shutil.ignore_patterns("expected.yaml"))
    code, out, err = _config(case_dir, capfd, monkeypatch, "--format", "json")
    assert code == 0, err
    assert json.loads(out) == YAML(typ="safe", pure=True).load((GOLDEN / case / "expected.yaml").read_text())


def test_services_and_images_lists(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    case_dir = tmp_path / "webapp"
    shutil.copytree(GOLDEN / "webapp", case_dir)
    assert _config(case_dir, capfd, monkeypatch, "--services")[1] == "backend\ndb\nproxy\n"
    assert _config(case_dir, capfd, monkeypatch, "--images")[1] == "webapp-backend\npostgres:16\nnginx:1.27\n"


def test_a_bad_file_exits_2_with_file_line_and_key(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n    ports:\n      - 80:80:80:80\n")
    monkeypatch.chdir(tmp_path)
    code = main(["compose", "config"])
    out, err = capfd.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("error: compose.yaml:5: services.web.ports[0]: invalid port '80:80:80:80'")
    assert "Traceback" not in err


def test_yaml_scalars_are_written_as_docker_compose_writes_them() -> None:
    from layerbuild.compose.render import to_yaml

    text = to_yaml({"inline": "FROM x\nRUN y\n", "restart": "no", "time": "1:30", "port": "80", "version": "3.12",
                    "flag": "true", "colon": "a: b", "plain": "echo hi", "empty": "", "none": None})
    assert text == ('inline: |\n  FROM x\n  RUN y\nrestart: "no"\ntime: "1:30"\nport: "80"\nversion: "3.12"\n'
                    "flag: \"true\"\ncolon: 'a: b'\nplain: echo hi\nempty: \"\"\nnone: null\n")
