"""A cold build starts the sandbox helpers of its first RUN steps while it plans (runtime.sandbox
warm_step_helpers); the steps take them, and none is left running after the build."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import layerbuild
from layerbuild.runtime import sandbox
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                out.add(int(pid))
    return out


def test_a_cold_build_takes_its_warmed_helpers_and_leaves_none(bb_ctx: Path, tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("RUN steps as root here (rootless steps take the helpers the same way)")
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "FROM base AS a\nRUN echo a > /a\nFROM base AS b\n"
                   "RUN echo b > /b\nFROM base\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n"})
    warmed: list[int] = []
    real = sandbox.warm_step_helpers
    monkeypatch.setattr(sandbox, "warm_step_helpers", lambda n: warmed.append(n) or real(n))
    taken: list[int] = []
    real_run = sandbox.run_step

    def run_step(*args: Any, **kw: Any) -> Any:
        with sandbox._warm_lock:
            taken.append(len(sandbox._warm))
        return real_run(*args, **kw)

    monkeypatch.setattr(sandbox, "run_step", run_step)
    import layerbuild.runtime as rt

    monkeypatch.setattr(rt, "run_step", run_step)
    before = _children()
    result = layerbuild.build(bb_ctx, root=tmp_path / "root", tags=["t"])
    assert result.image.id.startswith("sha256:")
    assert warmed and warmed[0] >= 1  # no earlier build of this context: started ahead
    assert taken and max(taken) >= 1  # a RUN step found one waiting
    assert sandbox._warm == []  # the ones no step took were ended
    assert _children() <= before
    # A rebuild of the same context (its history known) starts none ahead.
    warmed.clear()
    layerbuild.build(bb_ctx, root=tmp_path / "root", tags=["t"], no_cache=True)
    assert warmed == []


def test_dropped_helpers_end() -> None:
    sandbox.warm_step_helpers(2)
    helpers = [h for h, _, _ in sandbox._warm]
    assert len(helpers) == 2 and all(h.proc.poll() is None for h in helpers)
    sandbox.drop_step_helpers()
    assert sandbox._warm == [] and all(h.proc.poll() is not None for h in helpers)
