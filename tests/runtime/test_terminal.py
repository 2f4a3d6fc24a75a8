"""Terminals: a sandboxed process never holds the caller's terminal as its controlling terminal,
and `run -t`'s relay between the caller and the container's pty (on a real pty and process)."""

from __future__ import annotations

import os
import subprocess
import threading
import tty
from pathlib import Path

import pytest

from layerbuild.runtime import ProcessSpec, run_step, terminal

pytestmark = pytest.mark.integration


def test_run_step_has_no_controlling_terminal(lowers: list[Path], scratch: Path) -> None:
    """PID 1 leads a session of its own (field 6 of /proc/self/stat is 1) without a terminal (field 7
    is 0), so whatever terminal the build runs in cannot be opened as /dev/tty or fed with TIOCSTI."""
    script = "cut -d' ' -f6,7 /proc/self/stat; true 2>/dev/null </dev/tty && echo has-tty || echo no-tty"
    result = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("/bin/sh", "-c", script)))
    assert (result.exit_code, result.output_tail) == (0, b"1 0\nno-tty\n")


def test_relay_copies_both_ways_at_once(tmp_path: Path) -> None:
    """1 MiB typed in while the other side echoes it back: the relay never blocks on one direction
    while the other fills up, and stdout and the log get every byte, in order."""
    master, slave = os.openpty()
    tty.setraw(slave)  # bytes as they are: no echo, no CRLF, no signal keys
    size = 1 << 20
    echo = subprocess.Popen(["head", "-c", str(size)], stdin=slave, stdout=slave, close_fds=True)
    os.close(slave)
    data = os.urandom(size)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    received = bytearray()

    def feed() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(in_w, view[:65536]):]

    def collect() -> None:
        while chunk := os.read(out_r, 65536):
            received.extend(chunk)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=collect, daemon=True)]
    for t in threads:
        t.start()
    with open(tmp_path / "log", "wb") as log:
        relay = threading.Thread(target=terminal.relay, args=(master, in_r, out_w, log.fileno()), daemon=True)
        relay.start()
        relay.join(120)  # a guard against a hang, not a measurement
        assert not relay.is_alive(), "the relay is stuck"
    assert echo.wait(30) == 0
    os.close(out_w)
    threads[1].join(30)
    assert bytes(received) == data
    assert (tmp_path / "log").read_bytes() == data
    for fd in (master, in_r, in_w, out_r):
        os.close(fd)


def test_no_master_when_none_was_sent() -> None:
    ours, theirs = terminal.console_pair()
    with ours, theirs:
        assert terminal.receive_master(ours) is None
        theirs.sendall(b"m")  # a message without a descriptor
        assert terminal.receive_master(ours) is None
