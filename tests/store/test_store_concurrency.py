"""Several processes on one root at once, and writers killed with SIGKILL: the store stays sound."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from store_toys import put_image

from layerbuild.digest import sha256_digest
from layerbuild.store import MEDIA_LAYER_TAR, Store

WORKERS = 4
ROUNDS = 15


def _shared(i: int) -> bytes:
    return f"shared blob {i}\n".encode() * 500


def _worker(root: str, n: int, start: Any) -> None:
    start.wait()
    with Store(root) as store:
        for i in range(ROUNDS):
            # Same content from every worker, streamed in chunks, and content only this worker has.
            data = _shared(i)
            with store.blobs.writer() as w:
                for off in range(0, len(data), 1000):
                    w.write(data[off : off + 1000])
            store.index.put_layer(w.info.digest, w.info.digest, w.info.size, w.info.size, MEDIA_LAYER_TAR)
            store.index.put_cache(f"shared-{i}", "layer", w.info.digest, {"by": n})
            own = store.blobs.put(f"worker {n} round {i}".encode())
            store.index.put_cache(f"own-{n}-{i}", "blob", own.digest)
            if i % 5 == 0:
                put_image(store, [_shared(i), f"w{n}".encode()], tag=f"img:{n}-{i}", salt=f"{n}-{i}")
            store.index.put_history(f"df-{i % 3}", "", {"worker": n, "round": i})


def _pruner(root: str, start: Any, stop: Any) -> None:
    start.wait()
    with Store(root) as store:
        while not stop.is_set():
            store.prune(grace=30)
            store.fsck(repair=False)
            time.sleep(0.01)


def test_concurrent_writers_one_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Store(root).close()
    ctx = multiprocessing.get_context("spawn")
    start, stop = ctx.Event(), ctx.Event()
    procs = [ctx.Process(target=_worker, args=(str(root), n, start)) for n in range(WORKERS)]
    pruner = ctx.Process(target=_pruner, args=(str(root), start, stop))
    for p in [*procs, pruner]:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    pruner.join(60)
    assert pruner.exitcode == 0

    with Store(root) as store:
        blobs = set(store.blobs.list())
        for i in range(ROUNDS):
            assert sha256_digest(_shared(i)) in blobs
        for n in range(WORKERS):
            for i in range(ROUNDS):
                assert sha256_digest(f"worker {n} round {i}".encode()) in blobs
        assert len(store.index.list_cache()) == ROUNDS + WORKERS * ROUNDS
        assert len(store.index.list_tags()) == WORKERS * len(range(0, ROUNDS, 5))
        assert os.listdir(store.layout.tmp) == []
        report = store.fsck()
        assert report.ok, report.problems
        assert report.blobs_checked == len(blobs)


def _crash_victim(root: str, seed: int, ready: Any) -> None:
    rng = random.Random(seed)
    with Store(root) as store:
        ready.set()
        i = 0
        while True:
            i += 1
            size = rng.choice([10, 50_000, 2_000_000])
            data = rng.randbytes(size)
            with store.blobs.writer() as w:
                for off in range(0, len(data), 65536):
                    w.write(data[off : off + 65536])
            store.index.put_layer(w.info.digest, w.info.digest, size, size, MEDIA_LAYER_TAR)
            store.index.put_cache(f"{seed}-{i}", "layer", w.info.digest)

            def unpack(dest: Path, data: bytes = data) -> None:
                (dest / "payload").write_bytes(data)

            store.ensure_snapshot(w.info.digest, unpack)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_sound_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Store(root).close()
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    interrupted = 0  # kills that landed mid-write or mid-unpack, leaving a temp file behind
    for iteration in range(20):
        ready = ctx.Event()
        victim = ctx.Process(target=_crash_victim, args=(str(root), iteration, ready))
        victim.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0.0, 0.4))
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(30)
        assert victim.exitcode == -signal.SIGKILL

        with Store(root) as store:
            # Every blob under its final name is whole (fsck hashes them all), every row resolves.
            report = store.fsck()
            assert report.ok, (iteration, report.problems)
            interrupted += bool(report.temp_removed)
            after = store.blobs.put(f"after crash {iteration}".encode())
            assert store.blobs.read(after.digest) == f"after crash {iteration}".encode()
            assert store.fsck().ok
            assert os.listdir(store.layout.tmp) == []
    assert interrupted > 0
