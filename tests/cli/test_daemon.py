"""`layerbuild daemon`: commands run by a forked child of a resident process behave as if run here.

Real processes throughout: the daemon is started with `layerbuild daemon start` in a private
XDG_RUNTIME_DIR, and commands are real `python -m layerbuild` processes whose requests it serves
(its status counts them) or refuses (they then run in their own process)."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli import daemon as daemon_module
from layerbuild.cli import launch
from tests.build.kit import make_base
from tests.build.test_interrupt import _sleepers
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _lb(env: dict[str, str], *argv: str, cwd: Path = REPO, input: str | None = None,
        python: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*(python or [sys.executable, "-m", "layerbuild"]), *argv], cwd=cwd, env=env,
                          input=input, capture_output=True, text=True, timeout=120)


def _status(env: dict[str, str], python: list[str] | None = None, cwd: Path = REPO) -> dict[str, int]:
    got = _lb(env, "daemon", "status", "--format", "json", python=python, cwd=cwd)
    return json.loads(got.stdout)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a user whose daemon runs (a private XDG_RUNTIME_DIR); stopped afterwards."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "LAYERBUILD_DAEMON"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env["PYTHONPATH"] = str(REPO)
    started = _lb(env, "daemon", "start", "--idle-timeout", "600")
    assert started.returncode == 0 and "daemon started" in started.stdout, started.stderr
    pid = _status(env)["pid"]
    try:
        yield env
    finally:
        stopped = _lb(env, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), "the daemon outlived `daemon stop`"
        assert not any(runtime.glob("layerbuild/*.sock")), "the socket stayed behind"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    return root


def _without_age(table: str) -> str:
    """A table of `images` without its CREATED column's text and the padding that depends on it."""
    table = re.sub(r"\b(Less than a second|an? \w+|\d+ \w+) ago\b", "", table, flags=re.IGNORECASE)
    return re.sub(r" +", " ", table)


def test_a_build_through_the_daemon_is_the_build_run_here(daemon: dict[str, str], store: Path,
                                                          tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY hello.txt /hello.txt\nRUN echo ran > /ran\n")
    before = _status(daemon)["served"]
    built = _lb(daemon, "--root", str(store), "build", "-q", "-t", "app:1", str(ctx))
    assert built.returncode == 0, built.stderr
    assert _status(daemon)["served"] == before + 1
    # The same build in its own process finds every step cached and names the same image.
    here = _lb({**daemon, "LAYERBUILD_DAEMON": "0"}, "--root", str(store), "build", "-q", "-t", "app:1", str(ctx))
    assert here.returncode == 0 and here.stdout == built.stdout and built.stdout.startswith("sha256:")
    assert _status(daemon)["served"] == before + 1
    shown = _lb(daemon, "--root", str(store), "images")
    # (the CREATED column aside: "1 second ago" may become "2 seconds ago" between the two)
    assert _without_age(shown.stdout) == _without_age(
        _lb({**daemon, "LAYERBUILD_DAEMON": "0"}, "--root", str(store), "images").stdout)
    assert "app" in shown.stdout


def test_the_command_gets_the_callers_environment_directory_stdin_and_exit_code(
        daemon: dict[str, str], store: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "note.txt").write_text("from the context\n")
    dockerfile = "FROM base:1\nARG GREETING\nCOPY note.txt /note.txt\nRUN echo \"$GREETING\" > /greeting\n"
    env = {**daemon, "GREETING": "hi from the caller's environment"}
    before = _status(daemon)["served"]
    # `.` is the caller's working directory, `-f -` its standard input, `--build-arg NAME` its environment.
    built = _lb(env, "--root", str(store), "build", "-q", "-t", "greet:1", "--build-arg", "GREETING",
                "-f", "-", ".", cwd=ctx, input=dockerfile)
    assert built.returncode == 0, built.stderr
    ran = _lb(env, "--root", str(store), "run", "--rm", "greet:1", "cat", "/greeting", "/note.txt")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hi from the caller's environment\nfrom the context\n"
    failed = _lb(env, "--root", str(store), "run", "--rm", "greet:1", "sh", "-c", "echo oops >&2; exit 3")
    assert failed.returncode == 3 and failed.stderr == "oops\n"
    missing = _lb(env, "--root", str(store), "build", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "is not a directory" in missing.stderr and "Traceback" not in missing.stderr
    assert _status(daemon)["served"] == before + 4


def test_the_daemons_log_has_a_line_per_command_with_its_time_and_memory(
        daemon: dict[str, str], store: Path, tmp_path: Path) -> None:
    """Each command the daemon runs adds one line to its log: the verb (never the arguments), how
    it ended, and the peak memory of its process tree, a RUN step's included."""
    (log,) = Path(daemon["XDG_RUNTIME_DIR"], "layerbuild").glob("*.log")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # dd's 200 MiB buffer lives in the RUN step's process, a descendant of the command's.
    (ctx / "Dockerfile").write_text("FROM base:1\nARG TOKEN\n"
                                    "RUN dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null\n")
    before = log.read_text().splitlines()
    built = _lb(daemon, "--root", str(store), "build", "-q", "--build-arg", "TOKEN=s3cret-word", str(ctx))
    assert built.returncode == 0, built.stderr
    missing = _lb(daemon, "--root", str(store), "inspect", "no-such-image")
    assert missing.returncode == 2 and "no such image" in missing.stderr
    listed = _lb(daemon, "--root", str(store), "images")
    assert listed.returncode == 0
    lines = log.read_text().splitlines()[len(before):]
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ pid (\d+) (\w+): (exit \d+), ([\d.]+) s, "
                      r"CPU ([\d.]+) s, peak RSS ([\d.]+) MiB$")
    parsed = [line.match(text) for text in lines]
    assert all(parsed) and [(m[2], m[3]) for m in parsed] == [  # type: ignore[index]
        ("build", "exit 0"), ("inspect", "exit 2"), ("images", "exit 0")], lines
    assert "s3cret-word" not in log.read_text()
    build_rss, images_rss = float(parsed[0][6]), float(parsed[2][6])  # type: ignore[index]
    assert build_rss >= 200 > images_rss, lines
    assert len({m[1] for m in parsed}) == 3  # type: ignore[index]  (a child of its own for each)


def test_parsing_in_the_daemon_is_parsing_here(daemon: dict[str, str], store: Path) -> None:
    """The daemon's children parse with parsers it made before they were forked: the same help, the
    same usage errors and exit codes as a command run here, for every command (each child has its copy)."""
    here = {**daemon, "LAYERBUILD_DAEMON": "0"}
    before = _status(daemon)["served"]
    for argv in (["build", "--help"], ["run", "--no-such-flag", "x"], ["history", "--help"], ["images", "-q"],
                 ["build", "--help"], ["tag"]):
        got, want = _lb(daemon, "--root", str(store), *argv), _lb(here, "--root", str(store), *argv)
        assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr), argv
    assert _status(daemon)["served"] == before + 6


def test_a_bad_request_is_refused_in_words_and_the_daemon_goes_on(daemon: dict[str, str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated message, an oversized length and bytes that are no message each get a refusal
    that says why; the daemon then answers as before."""
    import socket

    monkeypatch.setenv("XDG_RUNTIME_DIR", daemon["XDG_RUNTIME_DIR"])
    path = launch.socket_path()
    assert path is not None
    got = []
    for payload in (b"\x00\x00\x00\x10abc", b"\x7f\xff\xff\xffxx", b"\x00\x00\x00\x03abc"):
        conn = socket.socket(socket.AF_UNIX)
        conn.settimeout(30)
        launch.connect_to(conn, path)
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        got.append(launch.receive(conn))
        conn.close()
    assert got == [{"refused": "a bad request: the request ended early"},
                   {"refused": "a bad request: 2147483647 bytes"},
                   {"refused": "a bad request: not a message: marshal data too short"}]
    assert _status(daemon)["served"] == 0


def test_ctrl_c_at_the_caller_interrupts_the_build(daemon: dict[str, str], store: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    marker = "302.5"
    (ctx / "Dockerfile").write_text(f"FROM base:1\nRUN sleep {marker}\n")
    before = _status(daemon)["served"]
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(store), "build", "--progress",
                             "plain", str(ctx)], cwd=REPO, env=daemon, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _sleepers(marker):
            assert proc.poll() is None and time.monotonic() < deadline, "the RUN step never started"
            time.sleep(0.05)
        assert _status(daemon)["running"] == 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err, err
    assert "Traceback" not in err
    assert _status(daemon)["served"] == before + 1
    end = time.monotonic() + 10
    while _sleepers(marker) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _sleepers(marker), "the step's process outlived the build"


def test_a_caller_that_dies_has_its_command_interrupted(daemon: dict[str, str], store: Path,
                                                         tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    marker = "303.5"
    (ctx / "Dockerfile").write_text(f"FROM base:1\nRUN sleep {marker}\n")
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(store), "build", "-q", str(ctx)],
                            cwd=REPO, env=daemon, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _sleepers(marker):
        assert proc.poll() is None and time.monotonic() < deadline, "the RUN step never started"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: the caller cannot pass anything on
    proc.wait()
    end = time.monotonic() + 20
    while (_sleepers(marker) or _status(daemon)["running"]) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _sleepers(marker) and _status(daemon)["running"] == 0


def test_a_caller_in_other_namespaces_runs_the_command_itself(daemon: dict[str, str], store: Path) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a new network namespace")
    before = _status(daemon)
    got = subprocess.run(["unshare", "--net", sys.executable, "-m", "layerbuild", "--root", str(store), "images"],
                         cwd=REPO, env=daemon, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and "base" in got.stdout, got.stderr
    after = _status(daemon)
    assert (after["served"], after["refused"]) == (before["served"], before["refused"] + 1)


def test_a_caller_in_another_cgroup_runs_the_command_itself(daemon: dict[str, str], store: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to make a cgroup")
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        lines = [x.split(":", 2) for x in f.read().splitlines()]
    pids = [(Path("/sys/fs/cgroup/pids"), p) for _, c, p in lines if "pids" in c.split(",")]
    unified = [(Path("/sys/fs/cgroup"), p) for _, c, p in lines if c == "" and len(lines) == 1]
    if not (pids or unified):
        pytest.skip("no pids or unified cgroup hierarchy to make a cgroup in")
    base, path = (pids or unified)[0]
    group = base / path.lstrip("/") / f"lb-daemon-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here: {exc}")
    before = _status(daemon)
    try:
        got = subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", sys.executable,
                              "-m", "layerbuild", "--root", str(store), "images"],
                             cwd=REPO, env=daemon, capture_output=True, text=True, timeout=60)
    finally:
        for _ in range(100):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.05)
    assert got.returncode == 0 and "base" in got.stdout, got.stderr
    after = _status(daemon)
    assert (after["served"], after["refused"]) == (before["served"], before["refused"] + 1)


def test_a_changed_layerbuild_is_not_answered_by_the_old_daemon(tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(REPO / "layerbuild", copy / "layerbuild", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "grammar", copy / "grammar")
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "LAYERBUILD_DAEMON"}
    env.update(XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(copy))
    python = [sys.executable, "-c", "import sys; sys.argv[0] = 'layerbuild'; "
              "from layerbuild.cli.launch import entry; entry()"]
    assert _lb(env, "daemon", "start", python=python, cwd=tmp_path).returncode == 0
    pid = _status(env, python, tmp_path)["pid"]
    try:
        root = tmp_path / "store"
        first = _lb(env, "--root", str(root), "images", python=python, cwd=tmp_path)
        assert first.returncode == 0 and _status(env, python, tmp_path)["served"] == 1
        with open(copy / "layerbuild" / "cli" / "images_cmd.py", "a", encoding="utf-8") as f:
            f.write("\n# a newer copy\n")
        second = _lb(env, "--root", str(root), "images", python=python, cwd=tmp_path)
        assert second.returncode == 0 and second.stdout == first.stdout
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), "the daemon of the older copy went on"
        # The command the old daemon sent back started a daemon of the newer copy, which answers now.
        newer = _wait_for_daemon(env, python, tmp_path)
        assert newer["pid"] != pid
        third = _lb(env, "--root", str(root), "images", python=python, cwd=tmp_path)
        assert third.returncode == 0 and third.stdout == first.stdout
        assert _status(env, python, tmp_path)["served"] == 1
    finally:
        _stop_all(env, python, tmp_path, runtime)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def test_another_installations_daemon_is_named_and_stopped_with_all(fresh_user: tuple[dict[str, str], Path],
                                                                     tmp_path: Path) -> None:
    """A copy of layerbuild elsewhere has a daemon of its own, which this one's commands never use:
    `daemon status` and `stop` say it runs (its pid, interpreter and copy), and `stop --all` ends it."""
    env, runtime = fresh_user
    copy = tmp_path / "src"
    shutil.copytree(REPO / "layerbuild", copy / "layerbuild", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "grammar", copy / "grammar")
    other = {**env, "PYTHONPATH": str(copy)}
    python = [sys.executable, "-c", "import sys; sys.argv[0] = 'layerbuild'; "
              "from layerbuild.cli.launch import entry; entry()"]
    assert _lb(other, "daemon", "start", python=python, cwd=tmp_path).returncode == 0
    theirs = _status(other, python, tmp_path)["pid"]
    try:
        status = _lb(env, "daemon", "status", cwd=tmp_path)
        assert status.returncode == 1
        assert status.stdout.startswith("no layerbuild daemon runs for this installation; 1 of another one runs")
        assert f"pid {theirs}: {sys.executable}, layerbuild in {copy / 'layerbuild'}" in status.stdout
        stop = _lb(env, "daemon", "stop", cwd=tmp_path)
        assert stop.returncode == 0 and f"pid {theirs}:" in stop.stdout and Path(f"/proc/{theirs}").exists()
        assert _lb(env, "daemon", "start", cwd=tmp_path).returncode == 0
        ours = _status(env, cwd=tmp_path)["pid"]
        stop_all = _lb(env, "daemon", "stop", "--all", cwd=tmp_path)
        assert stop_all.returncode == 0, stop_all.stderr
        assert stop_all.stdout.splitlines() == [f"layerbuild daemon stopped (pid {ours})",
                                                f"layerbuild daemon stopped (pid {theirs})"]
        assert _daemons_of(runtime) == []
        assert _lb(env, "daemon", "stop", cwd=tmp_path).stdout == "no layerbuild daemon runs\n"
        usage = _lb(env, "daemon", "status", "--all", cwd=tmp_path)
        assert usage.returncode == 2 and "--all goes with `daemon stop`" in usage.stderr
    finally:
        _stop_all(other, python, tmp_path, runtime)


def test_a_daemon_that_failed_to_start_is_not_tried_by_every_command(fresh_user: tuple[dict[str, str], Path],
                                                                      store: Path, tmp_path: Path) -> None:
    """A site hook that starts a thread in every interpreter makes the daemon refuse to run (it could
    not fork safely). The command that tried runs on; the next ones run in their own processes
    without starting another for an hour; `daemon status` says why; `daemon start` tries at once."""
    env, runtime = fresh_user
    site = tmp_path / "site"
    site.mkdir()
    starts = tmp_path / "daemon-starts"
    (site / "sitecustomize.py").write_text(
        "import os, sys, threading, time\n"
        "if sys.flags.safe_path and os.environ.get('TEST_THREAD'):  # (the daemon runs as python -P)\n"
        f"    open({str(starts)!r}, 'a').write('started\\n')\n"
        "    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n")
    env = {**env, "PYTHONPATH": f"{site}:{REPO}", "TEST_THREAD": "1"}

    def images() -> None:
        got = _lb(env, "--root", str(store), "images", cwd=tmp_path)
        assert got.returncode == 0 and "base" in got.stdout, got.stderr

    images()
    deadline = time.monotonic() + 60
    while not list(runtime.glob("layerbuild/*.failed")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (failed,) = runtime.glob("layerbuild/*.failed")
    assert "started a thread" in failed.read_text() and starts.read_text() == "started\n"
    for _ in range(3):
        images()
    time.sleep(1)
    assert starts.read_text() == "started\n" and _daemons_of(runtime) == []
    status = _lb(env, "daemon", "status", cwd=tmp_path)
    assert status.returncode == 1 and "its last start failed" in status.stdout
    assert "started a thread" in status.stdout and "`layerbuild daemon start` tries now" in status.stdout
    tried = _lb(env, "daemon", "start", cwd=tmp_path)
    assert tried.returncode != 0 and "started a thread" in tried.stderr and "Traceback" not in tried.stderr
    assert starts.read_text() == "started\n" * 2
    # An hour on, a command tries again.
    hours_ago = time.time() - 2 * 3600
    os.utime(failed, (hours_ago, hours_ago))
    images()
    deadline = time.monotonic() + 60
    while starts.read_text() != "started\n" * 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert starts.read_text() == "started\n" * 3
    # Once the cause is gone, a start succeeds and the failure is forgotten.
    del env["TEST_THREAD"]
    while failed.stat().st_mtime < hours_ago + 3600 and time.monotonic() < deadline:
        time.sleep(0.05)  # (the third start's failure written)
    assert _lb(env, "daemon", "start", cwd=tmp_path).returncode == 0
    assert not failed.exists()
    status = _lb(env, "daemon", "status", cwd=tmp_path)
    assert status.returncode == 0 and "last start failed" not in status.stdout


def test_the_daemons_watch_sees_every_change_the_walk_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_Watch` (inotify) stands in for the walk of layerbuild's files only while nothing happens:
    an edit in place, a new module in a subpackage, a file replaced by a rename, a removal and a
    `chmod` each break its quiet, and the walk then decides; bytecode written to __pycache__ does not."""
    package = tmp_path / "pkg"
    (package / "sub" / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("a = 1\n")
    (package / "sub" / "b.py").write_text("b = 1\n")
    watch = daemon_module._Watch(str(package))
    try:
        assert watch.quiet() and watch.quiet()
        (package / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"bytecode")
        assert watch.quiet()
        changes = [
            lambda: (package / "a.py").open("a").write("# edited\n"),
            lambda: (package / "sub" / "c.py").write_text("c = 1\n"),
            lambda: ((package / "b.new").write_text("b = 2\n"), os.replace(package / "b.new", package / "sub" / "b.py")),
            lambda: (package / "sub" / "c.py").unlink(),
            lambda: os.chmod(package / "a.py", 0o600),
        ]
        for change in changes:
            change()
            assert not watch.quiet()
            assert watch.quiet()  # (what happened was read)
    finally:
        watch.close()
    # The filesystem is the one of the longest mount point above the path; on a network one (whose
    # changes from another host send no event) there is no watch, and every command walks.
    assert daemon_module._fstype("/proc/self/status") == "proc"
    assert daemon_module._fstype("/sys/kernel") == "sysfs"
    monkeypatch.setattr(daemon_module, "_fstype", lambda path: "nfs4")
    with pytest.raises(OSError, match="not on a local filesystem"):
        daemon_module._Watch(str(package))
    # The interpreter's directory too (a venv's `python` link replaced there is a change).
    bin_dir = os.path.dirname(sys.executable)
    monkeypatch.setattr(daemon_module, "_fstype", lambda path: "nfs4" if path == bin_dir else "ext4")
    with pytest.raises(OSError, match="not on a local filesystem"):
        daemon_module._Watch(str(package))


def test_a_daemon_watches_its_files_with_inotify(daemon: dict[str, str]) -> None:
    pid = _status(daemon)["pid"]
    kinds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    if daemon_module._fstype(str(REPO / "layerbuild")) in daemon_module._LOCAL_FILESYSTEMS:
        assert "anon_inode:inotify" in kinds
    else:
        assert "anon_inode:inotify" not in kinds  # a network filesystem: every command walks them


def _wait_for_daemon(env: dict[str, str], python: list[str] | None = None, cwd: Path = REPO,
                     seconds: float = 60) -> dict[str, int]:
    """The status of the daemon once one answers (a started one loads layerbuild first)."""
    deadline = time.monotonic() + seconds
    while True:
        got = _lb(env, "daemon", "status", "--format", "json", python=python, cwd=cwd)
        if got.returncode == 0:
            return json.loads(got.stdout)
        assert time.monotonic() < deadline, f"no daemon answered: {got.stdout} {got.stderr}"
        time.sleep(0.1)


def _daemons_of(runtime: Path) -> list[int]:
    """The daemons whose socket directory is under `runtime` (read from their environment)."""
    from tests.conftest import layerbuild_daemons

    out = []
    for pid in layerbuild_daemons():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"XDG_RUNTIME_DIR={runtime}".encode() in environ:
            out.append(pid)
    return sorted(out)


def _stop_all(env: dict[str, str], python: list[str] | None, cwd: Path, runtime: Path) -> None:
    _lb(env, "daemon", "stop", python=python, cwd=cwd)
    deadline = time.monotonic() + 20
    while _daemons_of(runtime) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _daemons_of(runtime):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fresh_user(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """The environment of a user with no daemon yet (a private XDG_RUNTIME_DIR, LAYERBUILD_DAEMON
    unset) and that directory; every daemon started in it is stopped afterwards."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "LAYERBUILD_DAEMON"}
    env.update(XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(REPO))
    try:
        yield env, runtime
    finally:
        _stop_all(env, None, REPO, runtime)


def test_a_command_that_finds_no_daemon_starts_one_for_the_next(fresh_user: tuple[dict[str, str], Path],
                                                                 store: Path, tmp_path: Path) -> None:
    env, runtime = fresh_user
    # The first command runs in its own process and returns at once: subprocess.run waits for the
    # end of its output pipes, and for a pipe the command inherits as descriptor 5, so a daemon
    # that kept any of them would hold this up until its timeout.
    read, write = os.pipe()
    os.set_inheritable(write, True)
    pipe_name = f"pipe:[{os.fstat(read).st_ino}]"
    started = time.monotonic()
    first = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(store), "images"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60, pass_fds=(write,))
    os.close(write)
    assert first.returncode == 0, first.stderr
    assert "base" in first.stdout and "daemon" not in first.stderr  # (no terminal: not a word said)
    with os.fdopen(read, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], 30)
        assert ready and pipe.read() == b"", "someone still holds the pipe's other end"  # else: EOF
    assert time.monotonic() - started < 30
    status = _wait_for_daemon(env)
    assert status["served"] == 0 and _daemons_of(runtime) == [status["pid"]]
    pid = status["pid"]
    # Detached: its own session, the working directory /, no descriptor of the caller's.
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[3]) == pid  # (fields after the name: state, ppid, pgrp, session)
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert os.readlink(f"/proc/{pid}/fd/0") == os.readlink(f"/proc/{pid}/fd/1") == os.devnull
    assert os.readlink(f"/proc/{pid}/fd/2").endswith(".log")
    assert pipe_name not in targets
    assert [t for t in targets if t.startswith(str(tmp_path)) and not t.startswith(str(runtime))] == []
    # The next command is run by it, with the same result.
    second = _lb(env, "--root", str(store), "images", cwd=tmp_path)
    assert second.returncode == 0 and _without_age(second.stdout) == _without_age(first.stdout)
    assert _status(env)["served"] == 1
    # A command while it runs starts no other.
    assert _lb(env, "--root", str(store), "df", cwd=tmp_path).returncode == 0
    time.sleep(1)
    assert _daemons_of(runtime) == [pid]


def test_on_a_terminal_the_command_that_starts_a_daemon_says_so(fresh_user: tuple[dict[str, str], Path],
                                                                 store: Path, tmp_path: Path) -> None:
    env, _runtime = fresh_user
    master, slave = os.openpty()
    try:
        got = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(store), "images"], cwd=tmp_path,
                             env=env, stdout=subprocess.PIPE, stderr=slave, timeout=60)
        os.close(slave)
        said = b""
        while select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(master)
    assert got.returncode == 0 and b"base" in got.stdout
    assert b"started a daemon" in said and b"layerbuild daemon stop" in said and b"LAYERBUILD_DAEMON=0" in said
    _wait_for_daemon(env)
    again = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(store), "images"], cwd=tmp_path,
                           env=env, capture_output=True, timeout=60)
    assert again.returncode == 0 and b"daemon" not in again.stderr


def test_no_daemon_is_started_when_turned_off_or_for_a_command_that_stays_here(
        fresh_user: tuple[dict[str, str], Path], store: Path, tmp_path: Path) -> None:
    env, runtime = fresh_user
    off = _lb({**env, "LAYERBUILD_DAEMON": "0"}, "--root", str(store), "images", cwd=tmp_path)
    assert off.returncode == 0
    for argv in (["--version"], ["daemon", "status"], ["machine", "ls"], ["--root", str(store), "bogus-verb"]):
        _lb(env, *argv, cwd=tmp_path)
    time.sleep(2)  # a started daemon would be loading layerbuild by now
    assert _daemons_of(runtime) == []
    assert _lb(env, "daemon", "status").returncode == 1


def test_commands_that_start_at_once_leave_one_daemon(fresh_user: tuple[dict[str, str], Path], store: Path,
                                                      tmp_path: Path) -> None:
    env, runtime = fresh_user
    procs = [subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(store), "images"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    status = _wait_for_daemon(env)
    time.sleep(2)  # any second one has had the time to find the lock taken and end
    assert _daemons_of(runtime) == [status["pid"]]


def test_a_socket_directory_others_can_reach_is_not_used(tmp_path: Path) -> None:
    runtime = tmp_path / "xdg"
    (runtime / "layerbuild").mkdir(parents=True)
    os.chmod(runtime / "layerbuild", 0o755)
    env = {k: v for k, v in os.environ.items() if k != "LAYERBUILD_DAEMON"}
    env.update(XDG_RUNTIME_DIR=str(runtime), PYTHONPATH=str(REPO))
    got = _lb(env, "daemon", "start")
    assert got.returncode != 0 and "0700" in got.stderr and "Traceback" not in got.stderr
    assert not list((runtime / "layerbuild").iterdir())


def test_only_commands_that_cannot_tell_go_to_the_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LAYERBUILD_DAEMON", "LAYERBUILD_HOST", "LAYERBUILD_MACHINE"):
        monkeypatch.delenv(name, raising=False)
    yes = [["build", "."], ["--root", "/r", "build", "-q", "."], ["--root=/r", "images"], ["run", "--rm", "img", "true"],
           ["run", "-d", "--name", "x", "img"], ["pull", "busybox"]]
    no = [["run", "-it", "img", "sh"], ["run", "-i", "img"], ["run", "--tty", "img"], ["run", "-dit", "img"],
          ["run", "--interactive=true", "img"], ["login", "reg"], ["exec", "c", "sh"], ["compose", "up"],
          ["daemon", "status"], ["--host", "ssh://h", "build", "."], ["build", "-H", "ssh://h", "."],
          ["--version"], [], ["machine", "ls"], ["serve", "--stdio"]]
    assert [launch.forwardable(a) for a in yes] == [True] * len(yes)
    assert [launch.forwardable(a) for a in no] == [False] * len(no)
    monkeypatch.setenv("LAYERBUILD_DAEMON", "0")
    assert not launch.forwardable(["build", "."])
    monkeypatch.delenv("LAYERBUILD_DAEMON")
    monkeypatch.setenv("LAYERBUILD_HOST", "ssh://h")
    assert not launch.forwardable(["build", "."])
