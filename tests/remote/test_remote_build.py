"""Builds, runs and the rest of the verbs on a build host over a real sshd (`--machine`, `--host ssh://`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BUSYBOX_BASE, busybox_binary, fsck_problems
from tests.remote.sshd import SshHost

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _context(tmp_path: Path, run_line: str = 'RUN echo "built on $(cat /proc/sys/kernel/hostname)" > /hello') -> Path:
    ctx = tmp_path / "app"
    (ctx / "src").mkdir(parents=True)
    shutil.copy(busybox_binary(), ctx / "busybox")
    for i in range(20):
        (ctx / "src" / f"mod{i}.py").write_text(f"value = {i}\n" * 50)
    (ctx / "ignored.log").write_text("not sent\n")
    (ctx / ".dockerignore").write_text("*.log\n")
    (ctx / "Dockerfile").write_text(BUSYBOX_BASE + f"{run_line}\nCOPY src/ /app/src/\nCMD [\"cat\", \"/hello\"]\n")
    return ctx


def _build(host: SshHost, machine: str, ctx: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    report = ctx.parent / "report.json"
    proc = host.layerbuild("--machine", machine, "build", "--progress", "plain", "--report", str(report),
                           *args, str(ctx))
    return proc, json.loads(report.read_text())


def test_build_with_run_steps_then_a_cached_rebuild_then_a_one_file_edit(
        ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    proc, first = _build(ssh_host, machine, ctx, "-t", "remote-app:1")
    assert first["summary"]["executed"] >= 3, first["summary"]
    assert first["image"]["tags"] == ["remote-app:1"]
    assert "sending context to machine m1" in proc.stderr
    files = len(list((ctx / "src").iterdir())) + 3  # busybox, Dockerfile, .dockerignore; not ignored.log
    assert first["remote"]["context_files"] == files
    assert first["remote"]["sent_files"] == files
    # the image is in the host's store, not here
    remote_images = json.loads(ssh_host.layerbuild("--machine", machine, "images", "--json").stdout)
    assert any(i["name"] == "remote-app" and i["id"] == first["image"]["id"] for i in remote_images)
    assert not any(i["name"] == "remote-app" for i in json.loads(ssh_host.layerbuild("images", "--json").stdout))

    _, second = _build(ssh_host, machine, ctx, "-t", "remote-app:1")
    assert second["summary"]["executed"] == 0 and second["summary"]["cached"] == second["summary"]["steps"] - \
        sum(1 for s in second["steps"] if s["kind"] in ("meta", "base")), second["summary"]
    assert second["image"]["id"] == first["image"]["id"]
    assert second["remote"]["sent_files"] == 0 and second["remote"]["sent_bytes"] == 0

    edited = ctx / "src" / "mod7.py"
    edited.write_text("value = 'edited'\n")
    _, third = _build(ssh_host, machine, ctx, "-t", "remote-app:1")
    assert third["remote"]["sent_files"] == 1
    assert third["remote"]["sent_bytes"] == edited.stat().st_size
    copy = [s for s in third["steps"] if s["kind"] == "copy" and "src/" in s["instruction"]]
    assert copy and copy[0]["cached"] is False and "mod7.py" in (copy[0]["reason"] or "")
    runs = [s for s in third["steps"] if s["kind"] == "exec"]
    assert all(s["cached"] for s in runs)

    # a removed file leaves the host's copy too (the COPY misses again, nothing is sent)
    (ctx / "src" / "mod3.py").unlink()
    _, fourth = _build(ssh_host, machine, ctx, "-t", "remote-app:1")
    assert fourth["remote"]["sent_files"] == 0
    run = ssh_host.layerbuild("--machine", machine, "run", "--rm", "remote-app:1", "ls", "/app/src")
    assert "mod3.py" not in run.stdout and "mod7.py" in run.stdout


def test_load_brings_the_image_into_the_local_store(ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, 'RUN echo loaded > /hello')
    proc, report = _build(ssh_host, machine, ctx, "-t", "loaded-app:2", "-t", "loaded-app:latest", "--load")
    assert "Loaded image: loaded-app:2, loaded-app:latest" in proc.stderr
    local = json.loads(ssh_host.layerbuild("images", "--json").stdout)
    assert {(i["name"], i["tag"]) for i in local if i["id"] == report["image"]["id"]} == {
        ("loaded-app", "2"), ("loaded-app", "latest")}
    out = ssh_host.layerbuild("run", "--rm", "loaded-app:2")  # here, with no host
    assert out.stdout == "loaded\n"
    assert fsck_problems(Path(ssh_host.client_env["LAYERBUILD_ROOT"])) == []


def test_run_and_logs_on_the_host(ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, 'RUN echo ran-remotely > /hello')
    _build(ssh_host, machine, ctx, "-t", "run-app:1")
    out = ssh_host.layerbuild("--machine", machine, "run", "--rm", "run-app:1")
    assert out.stdout == "ran-remotely\n"
    failed = ssh_host.layerbuild("--machine", machine, "run", "--rm", "run-app:1", "sh", "-c", "echo oops >&2; exit 7",
                                 check=False)
    assert failed.returncode == 7 and failed.stderr == "oops\n"
    cid = ssh_host.layerbuild("--machine", machine, "run", "-d", "--name", "remote-logs", "run-app:1",
                              "sh", "-c", "echo one; echo two").stdout.strip()
    assert cid
    deadline = time.monotonic() + 30
    while True:
        ps = json.loads(ssh_host.layerbuild("--machine", machine, "ps", "-a", "--json").stdout)
        (row,) = [c for c in ps if c["name"] == "remote-logs"]
        if row["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row["exit_code"] == 0
    logs = ssh_host.layerbuild("--machine", machine, "logs", "remote-logs")
    assert logs.stdout == "one\ntwo\n"
    ssh_host.layerbuild("--machine", machine, "rm", "remote-logs")
    # nothing ran here
    assert json.loads(ssh_host.layerbuild("ps", "-a", "--json").stdout) == []


def _sleepers(marker: str) -> list[int]:
    """The pids (on this machine, which is the host) of processes running `sleep MARKER`."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[:2] in ([b"sleep", marker.encode()], [b"/bin/sleep", marker.encode()]):
                out.append(int(pid))
    return out


def _servers(host: SshHost) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"serve\0--stdio" in cmdline and str(host.home).encode() in cmdline:
                out.append(int(pid))
    return out


def _start_slow_build(host: SshHost, machine: str, tmp_path: Path, marker: str) -> subprocess.Popen[bytes]:
    ctx = _context(tmp_path, f"RUN sleep {marker}")
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild", "--machine", machine, "build", "--progress",
                             "plain", str(ctx)], env={**os.environ, **host.client_env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _sleepers(marker):
        if proc.poll() is not None or time.monotonic() > deadline:
            _out, err = proc.communicate()
            raise AssertionError(f"the RUN step never started: {proc.returncode}\n{err.decode()}")
        time.sleep(0.05)
    return proc


def _wait_gone(what: object, deadline_s: float = 30) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not what():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_ctrl_c_cancels_the_build_on_the_host(ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    marker = "91.25"
    proc = _start_slow_build(ssh_host, machine, tmp_path, marker)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert _wait_gone(lambda: _sleepers(marker)), "the RUN step still runs on the host"
    stopped = time.monotonic() - started
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode()
    assert stopped < 10, stopped  # "within a second" is measured by benchmarks; this catches a hang
    assert fsck_problems(ssh_host.store) == []


def test_a_dropped_connection_stops_the_build_and_leaves_the_store_consistent(
        ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    marker = "93.75"
    proc = _start_slow_build(ssh_host, machine, tmp_path, marker)
    proc.kill()  # the client dies: its ssh sees the end of its input, the host the end of the connection
    proc.wait()
    assert _wait_gone(lambda: _sleepers(marker)), "the RUN step still runs on the host"
    assert _wait_gone(lambda: _servers(ssh_host)), "serve --stdio still runs on the host"
    assert fsck_problems(ssh_host.store) == []
    # and the host's store is usable: the next build works
    ctx = _context(tmp_path / "again", "RUN echo after > /hello")
    _build(ssh_host, machine, ctx)


def test_what_a_host_cannot_do_yet_is_refused(ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    (tmp_path / "token").write_text("s3cret")
    for args, word in [
        (["build", "--secret", f"id=t,src={tmp_path / 'token'}", str(ctx)], "--secret"),
        (["build", "--output", f"type=local,dest={tmp_path / 'out'}", str(ctx)], "--output"),
        (["build", "--ssh", "default", str(ctx)], "--ssh"),
        (["build", "-"], "standard input"),
        (["build", "--cache-to", f"type=local,dest={tmp_path / 'c'}", str(ctx)], "--cache-to"),
        (["save", "x", "-o", str(tmp_path / "x.tar")], "layerbuild save"),
        (["run", "-it", "x"], "run -i"),
    ]:
        proc = ssh_host.layerbuild("--machine", machine, *args, check=False, input=b"")
        assert proc.returncode == 2, (args, proc.stderr)
        assert word in proc.stderr and "hint:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_dockerfile_outside_the_context_with_its_own_ignore_file(
        ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "RUN echo x > /hello")
    (ctx / "Dockerfile").unlink()
    df = tmp_path / "app.Dockerfile"
    df.write_text(BUSYBOX_BASE + "COPY . /ctx/\n")
    ignore = tmp_path / "app.Dockerfile.dockerignore"
    ignore.write_text("src/mod1*.py\n")  # wins over the context's .dockerignore (*.log)
    _, report = _build(ssh_host, machine, ctx, "-f", str(df), "-t", "ignore-app:1")
    listing = ssh_host.layerbuild("--machine", machine, "run", "--rm", "ignore-app:1", "ls", "/ctx", "/ctx/src").stdout
    assert "mod1.py" not in listing and "mod10.py" not in listing and "mod2.py" in listing
    assert "ignored.log" in listing  # the root .dockerignore does not apply
    assert report["remote"]["context_files"] == 3 + 20 - 11  # busybox, .dockerignore, ignored.log; src/ less 11
    ignore.unlink()
    _, report = _build(ssh_host, machine, ctx, "-f", str(df), "-t", "ignore-app:1")
    listing = ssh_host.layerbuild("--machine", machine, "run", "--rm", "ignore-app:1", "ls", "/ctx", "/ctx/src").stdout
    assert "mod1.py" in listing and "ignored.log" not in listing


def test_df_prune_and_stop_on_the_host(ssh_host: SshHost, machine: str) -> None:
    df = ssh_host.layerbuild("--machine", machine, "df").stdout
    assert "RECLAIMABLE" in df and str(ssh_host.store) in df.replace("\n", "")
    ssh_host.layerbuild("--machine", machine, "prune")
    missing = ssh_host.layerbuild("--machine", machine, "stop", "no-such-container", check=False)
    here = ssh_host.layerbuild("stop", "no-such-container", check=False)
    assert (missing.returncode, missing.stderr) == (here.returncode, here.stderr) == (
        2, "error: no such container: no-such-container\n")  # the same as a local stop
