"""`run`, `ps`, `logs`, `stop`, `rm` (and `bundle`) through the CLI on a busybox image."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.image import resolve_image, write_image
from layerbuild.store import Store
from tests.cli.kit import busybox_root, lb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with busybox_root("lb-cli-runtime-",
                      skip_rootless="runs as root (rootless is covered in tests/runtime/test_rootless.py)") as root:
        with Store.open(root) as store:
            image = resolve_image(store, "busybox")
            config = image.config.with_config(entrypoint=("/bin/echo", "entry"), cmd=("default",),
                                              env=("GREETING=hi", "PATH=/bin"), working_dir="/tmp",
                                              stop_signal="SIGUSR1")
            write_image(store, config, ["withentry"])
        yield root


def ps(root: Path, capfd: pytest.CaptureFixture[str], *flags: str) -> dict[str, dict[str, object]]:
    code, out, _ = lb(root, capfd, "ps", "--json", *flags)
    assert code == 0
    return {e["name"]: e for e in json.loads(out)}


def test_run_output_and_exit_codes(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Other tests' fixtures (a registry, an sshd) may be children of this process too; only new ones count.
    children_before = _children_of_ours()
    assert lb(root, capfd, "run", "--rm", "busybox", "sh", "-c", "echo hi; exit 3")[:2] == (3, "hi\n")
    code, _, err = lb(root, capfd, "run", "--rm", "busybox", "no-such-command")
    assert code == 127 and "executable file not found" in err
    assert lb(root, capfd, "run", "--rm", "busybox", "/etc/passwd")[0] == 126
    code, _, err = lb(root, capfd, "run", "--rm", "no-such-image")
    assert code == 125 and "no such image" in err
    # The helper started ahead for it (sandbox.prestart) ended without a word, and is reaped.
    assert err.startswith("error: no such image") and "Traceback" not in err
    assert not _children_of_ours() - children_before
    assert lb(root, capfd, "run", "--rm", "-u", "nobody", "busybox", "true")[0] == 125


def _children_of_ours() -> set[str]:
    return {p for p in os.listdir("/proc") if p.isdigit() and _child_of_ours(p)}


def _child_of_ours(pid: str) -> bool:
    try:
        return f"\nPPid:\t{os.getpid()}\n" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_entrypoint_cmd_env_workdir_user(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert lb(root, capfd, "run", "--rm", "withentry")[:2] == (0, "entry default\n")
    assert lb(root, capfd, "run", "--rm", "withentry", "a", "b")[:2] == (0, "entry a b\n")
    code, out, _ = lb(root, capfd, "run", "--rm", "--entrypoint", "/bin/sh", "-e", "EXTRA=1", "-w", "/home",
                      "-u", "app", "withentry", "-c", 'echo "$GREETING $EXTRA $(pwd) $(id -u)"')
    assert (code, out) == (0, "hi 1 /home 1000\n")


def test_volumes_and_network_none(root: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "in").write_text("data\n")
    code, out, _ = lb(root, capfd, "run", "--rm", "--network", "none", "-v", f"{tmp_path}:/data",
                      "-v", f"{tmp_path}:/ro:ro", "busybox", "sh", "-c",
                      "cat /data/in; echo x > /data/out; touch /ro/y 2>/dev/null || echo ro; grep -c : /proc/net/dev")
    assert code == 0 and out.split() == ["data", "ro", "1"]
    assert (tmp_path / "out").read_text() == "x\n"


def test_rm_flag_removes_and_plain_run_is_kept(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lb(root, capfd, "run", "--rm", "--name", "gone", "busybox", "true")
    lb(root, capfd, "run", "--name", "kept", "busybox", "sh", "-c", "exit 5")
    entries = ps(root, capfd, "-a")
    assert "gone" not in entries
    assert entries["kept"]["status"] == "exited" and entries["kept"]["exit_code"] == 5
    assert "kept" not in ps(root, capfd)
    assert lb(root, capfd, "rm", "kept")[0] == 0
    assert "kept" not in ps(root, capfd, "-a")
    assert lb(root, capfd, "rm", "kept")[0] == 2


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_detached_life_cycle(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    script = 'trap "echo stopping; exit 9" TERM; echo started; while :; do sleep 0.05; done'
    code, out, _ = lb(root, capfd, "run", "-d", "--name", "svc", "busybox", "sh", "-c", script)
    cid = out.strip()
    assert code == 0 and len(cid) == 64
    entry = ps(root, capfd)["svc"]
    assert entry["id"] == cid and entry["status"] == "running" and entry["exit_code"] is None
    assert entry["image"] == "busybox" and str(entry["command"]).startswith("sh -c ")
    assert set(entry) == {"id", "name", "image", "command", "status", "exit_code", "created"}
    wait_for(lambda: lb(root, capfd, "logs", "svc")[1] == "started\n")
    code, _, err = lb(root, capfd, "rm", "svc")
    assert code == 2 and "running" in err
    assert lb(root, capfd, "stop", "-t", "5", cid[:12])[0] == 0
    entry = ps(root, capfd, "-a")["svc"]
    assert (entry["status"], entry["exit_code"]) == ("exited", 9)
    assert lb(root, capfd, "logs", "svc")[1] == "started\nstopping\n"
    assert lb(root, capfd, "rm", "svc")[0] == 0
    assert "svc" not in ps(root, capfd, "-a")


def test_stop_escalates_to_sigkill_and_uses_stop_signal(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # withentry's StopSignal is SIGUSR1: the trap answers it, SIGTERM would be ignored by PID 1.
    code, _, _ = lb(root, capfd, "run", "-d", "--name", "usr1", "--entrypoint", "/bin/sh", "withentry", "-c",
                    'trap "exit 4" USR1; echo ready; while :; do sleep 0.05; done')
    assert code == 0
    # Signal only once the trap is set: before it, SIGUSR1 would end the shell with 138.
    wait_for(lambda: "ready" in lb(root, capfd, "logs", "usr1")[1])
    lb(root, capfd, "stop", "-t", "5", "usr1")
    assert ps(root, capfd, "-a")["usr1"]["exit_code"] == 4
    lb(root, capfd, "run", "-d", "--name", "stubborn", "busybox", "sleep", "60")
    started = time.monotonic()
    lb(root, capfd, "stop", "-t", "0.3", "stubborn")
    assert time.monotonic() - started < 3
    assert ps(root, capfd, "-a")["stubborn"]["exit_code"] == 137
    lb(root, capfd, "rm", "usr1", "stubborn")


def test_ps_after_the_monitor_was_killed(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lb(root, capfd, "run", "-d", "--name", "orphan", "busybox", "sleep", "60")
    from layerbuild.runtime import containers

    c = containers.find(root, "orphan")
    os.kill(c.helper_pid, signal.SIGKILL)
    time.sleep(0.1)
    assert ps(root, capfd)["orphan"]["status"] == "running"  # the container outlives its monitor
    os.kill(c.pid, signal.SIGKILL)
    wait_for(lambda: not c.running())
    entry = ps(root, capfd, "-a")["orphan"]
    assert entry["status"] == "exited" and entry["exit_code"] is None  # nobody was left to record it
    # A recorded pid that now belongs to another process (another start time) is not the container.
    c.pid, c.pid_start = os.getpid(), 1
    c.save()
    assert ps(root, capfd, "-a")["orphan"]["status"] == "exited"
    assert lb(root, capfd, "rm", "orphan")[0] == 0


def test_detached_rm_flag_removes_after_exit(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lb(root, capfd, "run", "-d", "--rm", "--name", "brief", "busybox", "true")
    wait_for(lambda: "brief" not in ps(root, capfd, "-a"))
