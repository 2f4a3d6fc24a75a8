"""A sandboxed process never holds the caller's terminal as its controlling terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.runtime import ProcessSpec, run_step

pytestmark = pytest.mark.integration


def test_run_step_has_no_controlling_terminal(lowers: list[Path], scratch: Path) -> None:
    """PID 1 leads a session of its own (field 6 of /proc/self/stat is 1) without a terminal (field 7
    is 0), so whatever terminal the build runs in cannot be opened as /dev/tty or fed with TIOCSTI."""
    script = "cut -d' ' -f6,7 /proc/self/stat; true 2>/dev/null </dev/tty && echo has-tty || echo no-tty"
    result = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("/bin/sh", "-c", script)))
    assert (result.exit_code, result.output_tail) == (0, b"1 0\nno-tty\n")
