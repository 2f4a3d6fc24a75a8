"""Leases end with their owner: a process killed before its lease's ttl leaves nothing pinned."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

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
