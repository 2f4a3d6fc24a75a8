"""Ctrl-C during a RUN step ends the build at once (exit 130), kills the step's processes and leaves
the store consistent; before, the build went on until the step ended by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.build.kit import make_base
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _sleepers(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_ctrl_c_stops_a_running_step(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("runs as root (rootless steps are stopped the same way)")
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    marker = "301.5"  # an unusual length, to find this step's sleep among the machine's processes
    (ctx / "Dockerfile").write_text(f"FROM base:1\nRUN echo before > /before\nRUN sleep {marker}\n")
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(root), "build", "--progress",
                             "plain", str(ctx)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _sleepers(marker):
            assert proc.poll() is None and time.monotonic() < deadline, "the RUN step never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # the step would sleep for five minutes on its own
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err, err
    assert "Traceback" not in err and "internal error" not in err
    end = time.monotonic() + 10
    while _sleepers(marker) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _sleepers(marker), "the step's process outlived the build"
    # The store is consistent (the autouse fsck checks it too) and the finished step stays cached.
    (ctx / "Dockerfile").write_text("FROM base:1\nRUN echo before > /before\n")
    again = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root), "build", "--progress",
                            "plain", str(ctx)], cwd=REPO, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "hit rate 100%" in again.stderr, again.stderr
