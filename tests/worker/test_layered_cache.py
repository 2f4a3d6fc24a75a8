"""The imported caches' lazy layers (worker.remotecache.LayeredCache) with a source that is told
what to answer: a layer the solver asked to prefetch is downloaded in the background, and one whose
download failed is refused when the image needs it, unless a step has built it since."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerbuild.errors import LayerbuildError
from layerbuild.registry.buildcache import CacheEntry, CacheRecords, Descriptor
from layerbuild.store import Store
from layerbuild.worker.remotecache import LayeredCache, RefusedCacheLayer

DIFF = "sha256:" + "d" * 64
BLOB = "sha256:" + "b" * 64


class FailingSource:
    """A source with one record whose layer fails its check when it is downloaded."""

    name = "test-source"

    def __init__(self) -> None:
        self.fetches = 0
        self.fetched = threading.Event()

    def read(self) -> tuple[CacheRecords, str | None]:
        entry = CacheEntry(key="k1", kind="copy", diff_id=DIFF, instruction="COPY app /app",
                           layer=Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", BLOB, 10), size=10)
        return CacheRecords(entries={"k1": entry}), None

    def fetch_layer(self, store: Store, entry: Any) -> Any:
        self.fetches += 1
        self.fetched.set()
        raise LayerbuildError("blob hashes to sha256:eeee, expected " + BLOB)

    def layer(self, entry: CacheEntry) -> Any:
        raise AssertionError("not asked")

    def write(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("not asked")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


def test_a_prefetched_layer_that_failed_is_refused_when_the_image_needs_it(store: Store) -> None:
    source, warnings = FailingSource(), []
    cache = LayeredCache(store, store.lease(), [source], warnings.append)
    try:
        taken = cache.get("k1")
        assert taken is not None and taken.diff_id == DIFF and cache.pending(DIFF)
        cache.prefetch([DIFF])
        assert source.fetched.wait(10)
        cache.close()  # the background download has ended (failed) before the image asks for it
        with pytest.raises(RefusedCacheLayer, match="refused the record of `COPY app /app`"):
            cache.ensure([DIFF])
        assert source.fetches == 1
        assert any("refused the record" in w for w in warnings)
        assert cache.get("k1") is None  # refused for good: the step is built on the next solve
        cache.ensure([DIFF])  # said once: a second ask (after the step was built) is not refused again
    finally:
        cache.close()


def test_without_a_prefetch_ensure_downloads_and_refuses(store: Store) -> None:
    source = FailingSource()
    cache = LayeredCache(store, store.lease(), [source], lambda _: None)
    try:
        assert cache.get("k1") is not None
        with pytest.raises(RefusedCacheLayer):
            cache.ensure([DIFF])
        assert source.fetches == 1
    finally:
        cache.close()


class CountingSource(FailingSource):
    """A source whose records are read once, slowly, on whatever thread asks first."""

    def __init__(self) -> None:
        super().__init__()
        self.readers: list[str] = []
        self.release = threading.Event()

    def read(self) -> tuple[CacheRecords, str | None]:
        self.readers.append(threading.current_thread().name)
        assert self.release.wait(10)
        return super().read()


def test_warm_reads_the_first_sources_records_in_the_background_once(store: Store) -> None:
    first, second = CountingSource(), CountingSource()
    cache = LayeredCache(store, store.lease(), [first, second], lambda _: None)
    try:
        cache.warm()
        cache.warm()  # a second call starts nothing more
        threading.Timer(0.2, first.release.set).start()
        taken = cache.get("k1")  # waits for the read under way, does not start another
        assert taken is not None and taken.diff_id == DIFF
        assert first.readers == ["cache-records"]
        assert second.readers == []  # the fallback is asked only when the first lacks a step
        assert cache.asked
    finally:
        first.release.set()
        cache.close()


def test_has_cache(store: Store) -> None:
    assert not store.index.has_cache()
    from layerbuild.solve.cache import NO_RESULT

    store.index.put_cache("k0", "env", NO_RESULT, {"size": None, "created": 0.0, "extra": {}})
    assert store.index.has_cache()
