"""The command line's dispatch: only the verb being run is set up, and every verb is listed for help."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.cli.main import VERBS, _named_verb, build_parser, main


@pytest.mark.parametrize(("argv", "verb"), [
    (["build", "."], "build"),
    (["--root", "/r", "images", "--json"], "images"),
    (["--root=/r", "ps"], "ps"),
    (["--root", "build", "df"], "df"),  # `build` is --root's value here
    (["-h", "build"], None),
    (["--version"], None),
    (["bogus"], None),
    ([], None),
])
def test_the_named_verb(argv: list[str], verb: str | None) -> None:
    assert _named_verb(argv) == verb


def test_only_the_named_verb_is_set_up_but_help_lists_them_all() -> None:
    assert list(build_parser(["--root", "/r", "build", "."])[1]) == ["build"]
    assert list(build_parser(["--help"])[1]) == list(VERBS)
    assert list(build_parser()[1]) == list(VERBS)


def test_an_unknown_verb_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus' (choose from 'build', 'parse'" in capsys.readouterr().err


def test_an_os_error_is_reported_plainly(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the system refuses (permissions, a full disk) is the user's to fix, not a bug to report."""
    import errno

    def refuse(args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/some/file")

    parser, _ = build_parser(["df"])
    monkeypatch.setattr("layerbuild.cli.main.build_parser", lambda argv=None: (parser, {"df": refuse}))
    monkeypatch.delenv("LAYERBUILD_DEBUG", raising=False)
    assert main(["df"]) == 1
    err = capsys.readouterr().err
    assert err == "error: Permission denied: '/some/file'\n"


def test_the_process_ends_without_teardown_only_when_nothing_else_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys
    import threading

    from layerbuild.cli import main as cli

    ended: list[tuple[str, int]] = []

    def fast(code: int) -> None:
        ended.append(("os._exit", code))
        raise SystemExit(code)

    import atexit

    monkeypatch.setattr(os, "_exit", fast)
    monkeypatch.setattr(atexit, "_ncallbacks", lambda: 0)  # pytest's own callbacks left out
    monkeypatch.delenv("LAYERBUILD_DEBUG", raising=False)
    with monkeypatch.context() as m:
        m.setattr(threading, "active_count", lambda: 1)  # other tests' threads left out
        m.setattr(sys, "gettrace", lambda: None)  # and a tracer pytest may run under
        m.setattr(sys, "getprofile", lambda: None)
        with pytest.raises(SystemExit):
            cli._exit(3)
    assert ended == [("os._exit", 3)]
    # A thread still running (a pool not shut down, a guess): the ordinary exit, which waits for it.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with pytest.raises(SystemExit) as exc:
            cli._exit(4)
        assert exc.value.code == 4 and ended == [("os._exit", 3)]
    finally:
        stop.set()
        other.join()
    # Something to do at exit (coverage's atexit callback, a profiler's hook): the ordinary exit too.
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(atexit, "_ncallbacks", lambda: 1)
    with pytest.raises(SystemExit):
        cli._exit(5)
    monkeypatch.setattr(atexit, "_ncallbacks", lambda: 0)
    with monkeypatch.context() as m:
        m.setattr(sys, "getprofile", lambda: object())
        with pytest.raises(SystemExit):
            cli._exit(6)
    monkeypatch.setenv("LAYERBUILD_DEBUG", "1")
    with pytest.raises(SystemExit):
        cli._exit(7)
    assert ended == [("os._exit", 3)]
    assert sys.stdout is not None


def test_a_process_ended_early_has_written_all_its_output_and_its_code(tmp_path: Path) -> None:
    import subprocess
    import sys
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n" + "".join(f"LABEL n{i}={'x' * 50}\n" for i in range(3000)))
    got = subprocess.run([sys.executable, "-m", "layerbuild", "parse", "--json", str(dockerfile)],
                         capture_output=True, text=True, check=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout.count('"n2999') == 1 and got.stdout.rstrip().endswith(("}", "]"))
    bad = tmp_path / "Bad"
    bad.write_text("FROM scratch\nCOPY\n")
    got = subprocess.run([sys.executable, "-m", "layerbuild", "parse", str(bad)], capture_output=True, text=True,
                         check=False)
    assert got.returncode == 2 and "Bad:2:1: COPY requires" in got.stderr and "2 instructions" in got.stdout
