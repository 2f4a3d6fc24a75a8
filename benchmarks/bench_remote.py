"""Builds on a host over SSH against the same builds here, measured in the same run: a no-op rebuild of the
app scenario through `--host ssh://` on loopback (a real sshd, the shared master connection warm) and
locally, alternating, medians; the share of the context a one-file edit sends; how long Ctrl-C takes to
stop a RUN step on the host (from SIGINT here to the step's process gone there).

Run: .venv/bin/python -m pytest benchmarks/bench_remote.py -s   (as root: the sshd logs in as root;
     LB_BENCH_ROUNDS, default 10; LB_BENCH_FILES, the app's files, default 5000)
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import edit_one, make_app

from tests.remote.sshd import SshHost, start_sshd, stop_sshd

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
LB = [sys.executable, "-m", "layerbuild"]
ROUNDS = int(os.environ.get("LB_BENCH_ROUNDS", "10"))
FILES = int(os.environ.get("LB_BENCH_FILES", "5000"))


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def _sleeping(marker: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                parts = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"sleep" in parts and marker.encode() in parts:
                    return True
            except OSError:
                pass
    return False


def _cancel_latency(host: SshHost, env: dict[str, str], ctx: Path, marker: str) -> float:
    (ctx / "Dockerfile").write_text(f"FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", "
                                    f"\"{marker}\"]\n")
    proc = subprocess.Popen([*LB, "--host", host.url, "build", "-q", str(ctx)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _sleeping(marker):
        assert proc.poll() is None, "the build ended before its RUN step started"
        time.sleep(0.01)
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    while _sleeping(marker):
        time.sleep(0.005)
    took = time.perf_counter() - start
    proc.wait(timeout=30)
    return took


def test_remote_noop_edit_and_cancel(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the benchmark's sshd logs in as root")
    host = start_sshd(tmp_path / "sshd")
    try:
        env = {**os.environ, **host.client_env}
        subprocess.run([*LB, "machine", "create", "bench", "--ssh", host.spec, *host.ssh_opts(), "--no-index"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        ctx = make_app(tmp_path / "app", files=FILES)
        local = [*LB, "--root", str(tmp_path / "local-store"), "build", "-q", "-t", "bench", str(ctx)]
        remote = [*LB, "--host", host.url, "build", "-q", "-t", "bench", str(ctx)]
        cold_local, cold_remote = _timed(local, env), _timed(remote, env)
        times: dict[str, list[float]] = {"local": [], "remote": []}
        for _ in range(ROUNDS):
            times["local"].append(_timed(local, env))
            times["remote"].append(_timed(remote, env))
        med = {k: statistics.median(v) for k, v in times.items()}

        edit_one(ctx)
        report = tmp_path / "report.json"
        subprocess.run([*remote[:-1], "--report", str(report), str(ctx)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        sent = json.loads(report.read_text())["remote"]
        share = sent["sent_bytes"] / sent["context_bytes"]

        small = tmp_path / "sleeper"
        small.mkdir()
        import shutil

        shutil.copy(shutil.which("busybox") or "/bin/busybox", small / "busybox")
        cancels = [_cancel_latency(host, env, small, f"{37 + i}.5") for i in range(3)]

        lines = [
            f"app scenario: {FILES} files, {sent['context_bytes'] / 1e6:.1f} MB of context; {ROUNDS} rounds, alternating",
            f"cold build: local {cold_local:.2f} s, remote {cold_remote:.2f} s (sends the whole context)",
            f"no-op rebuild, median: local {med['local']:.3f} s, --host ssh:// {med['remote']:.3f} s, "
            f"difference {med['remote'] - med['local']:+.3f} s (target: at most +0.3 s)",
            f"  local:  {' '.join(f'{t:.3f}' for t in times['local'])}",
            f"  remote: {' '.join(f'{t:.3f}' for t in times['remote'])}",
            f"one-file edit: sent {sent['sent_files']} file, {sent['sent_bytes']} B of {sent['context_bytes']} B "
            f"({share:.4%} of the context; target < 1 %)",
            f"Ctrl-C to the RUN step gone on the host: {' '.join(f'{t:.3f}' for t in cancels)} s "
            f"(median {statistics.median(cancels):.3f} s; target within 1 s)",
        ]
        print("\n" + "\n".join(lines))
        assert sent["sent_files"] == 1
    finally:
        stop_sshd(host)
