"""Docker flags users pass: those that fit now work (build --iidfile/--metadata-file, run --env-file
and -h/--hostname; --label and --add-host in tests/cli/test_labels_and_hosts.py); the rest are refused by name, saying when they come, instead of the top-level
usage and "unrecognized arguments" (their value used to be taken for the context)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.cli.run_cmd import env_files
from layerbuild.errors import UsageError
from tests.cli.kit import busybox_root, lb


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    (path / "Dockerfile").write_text("FROM scratch\nLABEL a=1\n")
    return path


def test_iidfile_and_metadata_file(tmp_path: Path, ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iid, meta = tmp_path / "iid", tmp_path / "meta.json"
    code = main(["--root", str(tmp_path / "store"), "build", "-q", "-t", "app:1", "--iidfile", str(iid),
                 "--metadata-file", str(meta), str(ctx)])
    out = capsys.readouterr().out.strip()
    assert code == 0
    assert iid.read_text() == out and out.startswith("sha256:")  # docker writes the id, no newline
    data = json.loads(meta.read_text())
    assert data["containerimage.config.digest"] == out and data["image.name"] == "app:1"
    assert data["containerimage.digest"].startswith("sha256:") and data["containerimage.digest"] != out


@pytest.mark.parametrize(("flags", "named"), [
    (("--shm-size", "1g"), "build --shm-size"), (("--ulimit", "nofile=1024"), "build --ulimit"),
])
def test_build_flags_not_yet_are_named(tmp_path: Path, ctx: Path, flags: tuple[str, ...], named: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--root", str(tmp_path / "store"), "build", *flags, str(ctx)])
    err = capsys.readouterr().err
    assert code == 2 and f"`{named}` is not supported yet" in err and "hint: " in err, err
    assert "unrecognized arguments" not in err and "Traceback" not in err


@pytest.mark.parametrize(("flags", "words"), [
    (("--platform", "linux/amd64,linux/arm64"), "names several platforms"),
    (("--platform", "linux/"), "invalid platform"),
])
def test_build_platform_is_checked(tmp_path: Path, ctx: Path, flags: tuple[str, ...], words: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--root", str(tmp_path / "store"), "build", *flags, str(ctx)])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "hint: " in err and "Traceback" not in err, err


@pytest.mark.parametrize(("flags", "named"), [
    (("-P",), "run -P/--publish-all"), (("--privileged",), "run --privileged"),
])
def test_run_flags_not_yet_are_named(tmp_path: Path, flags: tuple[str, ...], named: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--root", str(tmp_path / "store"), "run", *flags, "busybox", "true"])
    err = capsys.readouterr().err
    assert code == 2 and f"`{named}` is not supported yet" in err, err


def test_env_file_is_read_as_docker_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env"
    path.write_text('# a comment\n\nA=1\nQUOTED="kept as written"\n  SPACED=x y\nFROM_CALLER\nEMPTY=\n')
    monkeypatch.setenv("FROM_CALLER", "yes")
    assert env_files([str(path)]) == ["A=1", 'QUOTED="kept as written"', "SPACED=x y", "FROM_CALLER", "EMPTY="]
    (tmp_path / "bad").write_text("OK=1\nBAD NAME=2\n")
    with pytest.raises(UsageError, match=r"bad:2: invalid variable name 'BAD NAME'"):
        env_files([str(tmp_path / "bad")])
    with pytest.raises(UsageError, match="cannot read --env-file"):
        env_files([str(tmp_path / "missing")])


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with busybox_root("lb-cli-flags-", skip_rootless="runs containers as root") as root:
        yield root


@pytest.mark.integration
def test_run_env_file_and_hostname(root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "env"
    env.write_text("A=from-file\nB=file\nFROM_CALLER\n")
    monkeypatch.setenv("FROM_CALLER", "caller")
    code, out, err = lb(root, capfd, "run", "--rm", "--env-file", str(env), "-e", "B=flag", "-h", "box1",
                        "busybox", "sh", "-c", 'echo "$A $B $FROM_CALLER"; hostname')
    assert code == 0, err
    assert out.split("\n")[:2] == ["from-file flag caller", "box1"]  # -e wins over the file, as in docker
    assert os.environ["FROM_CALLER"] == "caller"
