"""Leases end with their owner: a process killed before its lease's ttl leaves nothing pinned."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.errors import StoreError
from layerbuild.store import Store

_HOLD_AND_DIE = """
import os, signal, sys
from layerbuild.store import Store
store = Store(sys.argv[1])
lease = store.lease()
lease.add(sys.argv[2])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_owners_lease_no_longer_pins_and_a_live_one_does(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store(root) as store:
        dead_blob = store.blobs.put(b"held by a process that was killed\n").digest
        live_blob = store.blobs.put(b"held by this process\n").digest
        done = subprocess.run([sys.executable, "-c", _HOLD_AND_DIE, str(root), dead_blob], check=False)
        assert done.returncode == -signal.SIGKILL
        with store.lease() as lease:
            lease.add(live_blob)
            report = store.prune(grace=0)
            assert dead_blob in report.blobs
            assert live_blob not in report.blobs
            assert store.blobs.stat(live_blob) is not None
        with store.db.read() as conn:
            assert conn.execute("SELECT count(*) FROM leases").fetchone()[0] == 0


def test_the_grace_period_can_be_set_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "root") as store:
        fresh = store.blobs.put(b"just put, referenced by nothing\n").digest
        assert fresh not in store.prune().blobs  # inside the default hour
        monkeypatch.setenv("LAYERBUILD_PRUNE_GRACE", "soon")
        with pytest.raises(StoreError, match="LAYERBUILD_PRUNE_GRACE"):
            store.prune()
        monkeypatch.setenv("LAYERBUILD_PRUNE_GRACE", "0")
        assert fresh in store.prune().blobs


_MAKE_SCRATCH = """
import sys
from pathlib import Path
from layerbuild.store.layout import make_scratch
print(make_scratch(Path(sys.argv[1]), "run-"))
"""


def test_scratch_of_a_dead_owner_goes_and_a_live_or_unknown_owners_stays(tmp_path: Path) -> None:
    from layerbuild.store.layout import make_scratch
    from layerbuild.store.scratch import clean_scratch

    tmp = tmp_path / "tmp"
    mine = make_scratch(tmp, "rootfs-")
    (mine / "f").write_text("in use")
    done = subprocess.run([sys.executable, "-c", _MAKE_SCRATCH, str(tmp)], capture_output=True, text=True,
                          check=True)
    dead = Path(done.stdout.strip())
    (dead / "upper").mkdir()
    (dead / "upper" / "ro").mkdir(mode=0o500)
    unknown = tmp / "run-abcd1234"  # an older version's name: no owner to ask
    unknown.mkdir()
    assert clean_scratch(tmp) == [dead]
    assert mine.is_dir() and unknown.is_dir() and not dead.exists()
