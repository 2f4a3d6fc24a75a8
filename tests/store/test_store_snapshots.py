"""Snapshots: made once per layer, whole or absent, safe with concurrent makers, disposable."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from layerbuild.digest import sha256_digest
from layerbuild.store import Store

DIFF = sha256_digest(b"layer")


def _unpack_slowly(counter: Path) -> object:
    def unpack(dest: Path) -> None:
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.2)
        (dest / "etc").mkdir()
        (dest / "etc" / "hostname").write_text("box\n")

    return unpack


def test_ensure_unpacks_once(store: Store, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    path = store.ensure_snapshot(DIFF, _unpack_slowly(counter))  # type: ignore[arg-type]
    assert (path / "etc" / "hostname").read_text() == "box\n"
    again = store.ensure_snapshot(DIFF, _unpack_slowly(counter))  # type: ignore[arg-type]
    assert again == path
    assert counter.read_text() == "x"
    assert list(store.snapshots.diff_ids()) == [DIFF]
    assert os.listdir(store.layout.tmp) == []


def test_failed_unpack_leaves_nothing(store: Store) -> None:
    def broken(dest: Path) -> None:
        (dest / "half").mkdir(mode=0o500)
        raise ValueError("bad layer")

    with pytest.raises(ValueError):
        store.ensure_snapshot(DIFF, broken)
    assert not store.snapshots.exists(DIFF)
    assert os.listdir(store.layout.tmp) == []


def test_remove_and_rebuild(store: Store) -> None:
    def unpack(dest: Path) -> None:
        (dest / "ro").mkdir()
        (dest / "ro" / "f").write_text("1")
        (dest / "ro").chmod(0o555)

    store.ensure_snapshot(DIFF, unpack)
    assert store.snapshots.remove(DIFF) is True
    assert not store.snapshots.exists(DIFF)
    assert store.snapshots.remove(DIFF) is False
    path = store.ensure_snapshot(DIFF, unpack)
    assert (path / "ro" / "f").read_text() == "1"


def _child_ensure(root: str, counter: str) -> None:
    with Store(root) as s:
        s.ensure_snapshot(DIFF, _unpack_slowly(Path(counter)))  # type: ignore[arg-type]


def test_concurrent_processes_unpack_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Store(root).close()
    counter = tmp_path / "count"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_child_ensure, args=(str(root), str(counter))) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert counter.read_text() == "x"
    with Store(root) as s:
        assert (s.snapshots.path(DIFF) / "etc" / "hostname").exists()


def test_orphan_unpack_dirs_are_cleaned(store: Store) -> None:
    orphan = store.layout.tmp / f"snap-{DIFF.split(':')[1]}-123-abc"
    (orphan / "usr").mkdir(parents=True)
    assert store.snapshots.clean_orphans() == [orphan]
    assert not orphan.exists()
