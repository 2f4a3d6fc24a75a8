"""A build compiles the RUN steps' seccomp program ahead (worker.runop.prewarm_seccomp) only while its
store has none compiled yet: after that a RUN step reads the program, and a build whose RUN steps
all hit the cache does no seccomp work at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import layerbuild
import layerbuild.worker.runop as runop
from layerbuild.store.layout import Layout
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration


def test_the_program_is_compiled_ahead_once_per_store(bb_ctx: Path, tmp_path: Path, monkeypatch: Any) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "RUN echo hi > /hi\n"})
    calls: list[Path] = []
    real = runop.prewarm_seccomp
    monkeypatch.setattr(runop, "prewarm_seccomp", lambda cache: calls.append(cache) or real(cache))
    root = tmp_path / "root"
    layerbuild.build(bb_ctx, root=root, tags=["t"])
    assert calls == [Layout(root).seccomp]  # a fresh store: compiled ahead
    assert any(p.suffix == ".bpf" for p in Layout(root).seccomp.iterdir())
    layerbuild.build(bb_ctx, root=root, tags=["t"], no_cache=True)  # the RUN steps run again
    assert calls == [Layout(root).seccomp]  # the program is there: read by the step, not compiled ahead
