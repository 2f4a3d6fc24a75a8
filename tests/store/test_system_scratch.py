"""Scratch a build keeps in the system's temp dir (ADD downloads, unpacked archives) carries its
owner, so what a killed build left there is removed by the next command, and nothing else is."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from layerbuild.store import Store
from layerbuild.store.layout import system_scratch
from layerbuild.store.scratch import clean_temp
from tests.conftest import REPO

MAKE = "from layerbuild.store.layout import system_scratch; p = system_scratch({prefix!r}); " \
       "(p / 'part').write_bytes(b'x' * 4096); print(p)"


def _made_by_a_process_that_died(prefix: str, tmpdir: Path) -> Path:
    done = subprocess.run([sys.executable, "-c", MAKE.format(prefix=prefix)], capture_output=True, text=True,
                          check=True, cwd=REPO, env={**os.environ, "TMPDIR": str(tmpdir)})
    return Path(done.stdout.strip())


def test_a_dead_builds_temp_dirs_go_and_live_and_foreign_ones_stay(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A temp dir of the test's own: other layerbuild processes on the machine sweep the real one too.
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    dead = [_made_by_a_process_that_died(p, systmp) for p in ("layerbuild-copy-", "layerbuild-unpack-")]
    live = system_scratch("layerbuild-copy-")
    foreign = Path(tempfile.mkdtemp(prefix="layerbuild-copy-"))  # no owner in its name
    other = Path(tempfile.mkdtemp(prefix="run-1.2.3-"))  # a store scratch name, outside any store
    try:
        assert all(p.is_dir() and p.parent == Path(tempfile.gettempdir()) for p in dead)
        with Store.open(tmp_path / "store") as store:
            removed = clean_temp(store)
        assert all(not p.exists() for p in dead) and set(dead) <= set(removed)
        assert live.is_dir() and foreign.is_dir() and other.is_dir()
    finally:
        for path in (*dead, live, foreign, other):
            subprocess.run(["rm", "-rf", str(path)], check=False)
