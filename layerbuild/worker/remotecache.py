"""The build's caches beyond the store: `--cache-from` sources read at the first local miss, and the
`--cache-to` export after the build (see registry.buildcache for the format).

A step is looked up in the store first; only when the store has no record is any `--cache-from`
source asked, in the order given (the branch's cache, then main's), and its records are fetched
then, once. A store that holds no cache record at all (an ephemeral runner's) will miss on every
step: there the first source's records are fetched from the build's start (`warm`), while the
context is read and hashed, instead of at the first miss. A record found there is taken at once,
but its layer is downloaded only when a later step needs the files (a RUN on top, a COPY --from,
a COPY that looks at the directories) or the image is written: a build stage whose result the
final image only copies from, cached as a whole, is never downloaded. A layer is checked at the store's door (digest, diff_id, archive rules) and a
local record written, so the next build hits locally without asking; a layer that fails is refused,
said so, and the build solves again, building that step.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from layerbuild.errors import LayerbuildError
from layerbuild.plan import BuildPlan, StageRef
from layerbuild.registry.buildcache import (
    CacheEntry,
    CacheRecords,
    LocalCache,
    MountEntry,
    RegistryCache,
    short_fingerprint,
)
from layerbuild.solve.cache import StoreCache
from layerbuild.solve.explain import StepRecord
from layerbuild.solve.solver import Output
from layerbuild.store import LayerRecord, Lease, Store
from layerbuild.worker.cachespec import CacheSpec


class CacheBackend(Protocol):
    name: str
    sent: int  # bytes its last write sent (uploaded, or written to the directory)

    def read(self) -> tuple[CacheRecords, str | None]: ...

    def fetch_layer(self, store: Store, entry: CacheEntry | MountEntry) -> LayerRecord: ...

    def layer(self, entry: CacheEntry) -> Any: ...

    def write(self, store: Store, entries: Sequence[CacheEntry], *, compression: str,
              max_size: int | None = None, mounts: Sequence[MountEntry] = (),
              borrowed: Mapping[str, Any] | None = None) -> str: ...


def open_backend(spec: CacheSpec, client: Callable[[], object], *, platform: str = "linux/amd64") -> CacheBackend:
    """Where `spec` reads and writes (`type=inline` has no backend: the build writes it into its image)."""
    assert spec.type != "inline"
    if spec.type == "local":
        return LocalCache(spec.path)
    from layerbuild.registry.client import RegistryClient

    registry = client()
    assert isinstance(registry, RegistryClient)
    return RegistryCache(registry, spec.ref, platform=platform)


FETCHES_AT_ONCE = 3  # layers downloaded from the caches at once, as docker's max-concurrent-downloads


class RefusedCacheLayer(LayerbuildError):
    """A layer taken from an imported cache failed its check when it was downloaded."""


@dataclass
class _Pending:
    """A layer some steps took from a source, to download when it is needed."""

    index: int
    source: _Source
    entry: CacheEntry
    keys: list[tuple[str, str, Output]] = field(default_factory=list)
    future: Any = None


@dataclass
class _Source:
    backend: CacheBackend
    records: CacheRecords | None = None
    error: str | None = None


class LayeredCache(StoreCache):
    """The store's cache, then the `--cache-from` sources (see the module docstring)."""

    def __init__(self, store: Store, lease: Lease, sources: Sequence[CacheBackend],
                 warn: Callable[[str], None], *, dry_run: bool = False) -> None:
        super().__init__(store, lease)
        self._dry_run = dry_run  # a dry run takes records to plan with and stores none of them
        self._sources = [_Source(b) for b in sources]
        self._lock = threading.Lock()
        self._warn = warn
        self.fetched: list[str] = []  # digests of the layers brought from a source
        self.fetched_bytes = 0
        self.used = 0  # steps answered by a source
        self.asked = False  # whether any source's records were read
        self._pending: dict[str, _Pending] = {}  # diff_id → a layer taken from a source, not downloaded yet
        self._refused: set[tuple[int, str]] = set()  # (source, key) whose layer failed its check
        self._failed: dict[str, str] = {}  # diff_id → why its download was refused, until ensure says so
        self._executor: Any = None
        self._read_lock = threading.Lock()  # one read of each source's records, waited for by the rest
        self._warming: threading.Thread | None = None

    def warm(self) -> None:
        """Start reading the first source's records in the background (for a store that can answer no
        step itself); `get` waits for them when it comes to its first lookup."""
        if self._sources and self._warming is None:
            first = self._sources[0]
            self._warming = threading.Thread(target=self._records, args=(first,), name="cache-records", daemon=True)
            self._warming.start()

    def _records(self, source: _Source) -> CacheRecords:
        with self._read_lock:
            if source.records is None and source.error is None:
                self.asked = True
                try:
                    source.records, _ = source.backend.read()
                except LayerbuildError as exc:
                    source.error = exc.message
                    self._warn(f"cache {source.backend.name} could not be read: {exc.message}; building without it")
            return source.records or CacheRecords()

    def get(self, key: str) -> Output | None:
        local = super().get(key)
        if local is not None or not self._sources:
            return local
        for i, source in enumerate(self._sources):
            entry = self._records(source).get(key)
            if entry is None or (i, key) in self._refused:
                continue
            if entry.diff_id is None:
                output = Output(None, size=None, created=entry.created)
            else:
                output = Output(entry.diff_id, size=entry.size, created=entry.created)
                if not self.store.present_layers(entry.diff_id):
                    # Taken now, downloaded when a step needs its files or the image is written (ensure).
                    with self._lock:
                        self._pending.setdefault(entry.diff_id, _Pending(i, source, entry)).keys.append(
                            (key, entry.kind, output))
                        self.used += 1
                    return output
            with self._lock:
                self.used += 1
            if self._dry_run:
                return output
            self.put(key, entry.kind, output)
            return super().get(key) or output
        return None

    def pending(self, diff_id: str) -> bool:
        """Whether `diff_id` is a layer taken from a source and not downloaded yet."""
        with self._lock:
            return diff_id in self._pending

    def ensure(self, diff_ids: Sequence[str]) -> None:
        """Download the layers of `diff_ids` taken from a source and not yet here (a few at a time),
        each checked at the store's door and then recorded in the store's own cache. A layer that
        fails its check is refused for good and RefusedCacheLayer raised: the build solves again,
        building that step (the rest is in the store by then). A layer `prefetch` started is waited
        for, and one whose download already failed is refused here (unless a step built it since)."""
        waits = self._start(diff_ids)
        with self._lock:
            failed = [(d, self._failed.pop(d)) for d in dict.fromkeys(diff_ids) if d in self._failed]
        refused = [message for diff_id, message in failed if not self.store.present_layers(diff_id)]
        for diff_id, future in waits:
            try:
                future.result()
            except RefusedCacheLayer as exc:
                with self._lock:
                    self._failed.pop(diff_id, None)
                if exc.message not in refused:
                    refused.append(exc.message)
        if refused:
            raise RefusedCacheLayer("; ".join(refused))

    def prefetch(self, diff_ids: Sequence[str]) -> None:
        """Start downloading the layers of `diff_ids` taken from a source, without waiting: the
        solver calls this for the steps whose layers the image will hold, so they arrive while the
        rest of the build solves. A failure is kept for `ensure` to refuse."""
        self._start(diff_ids)

    def _start(self, diff_ids: Sequence[str]) -> list[tuple[str, Any]]:
        started = []
        with self._lock:
            for diff_id in dict.fromkeys(diff_ids):
                item = self._pending.get(diff_id)
                if item is None:
                    continue
                if item.future is None:
                    item.future = self._pool().submit(self._fetch, diff_id, item)
                started.append((diff_id, item.future))
        return started

    def _pool(self) -> Any:
        from concurrent.futures import ThreadPoolExecutor

        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=FETCHES_AT_ONCE, thread_name_prefix="cache-fetch")
        return self._executor

    def _fetch(self, diff_id: str, item: _Pending) -> None:
        try:
            record = item.source.backend.fetch_layer(self.store, item.entry)
        except LayerbuildError as exc:
            with self._lock:
                for key, _, _ in item.keys:
                    self._refused.add((item.index, key))
                self._pending.pop(diff_id, None)
                self.used -= len(item.keys)
                message = (f"refused the record of `{item.entry.instruction}` in cache {item.source.backend.name}: "
                           f"{exc.message}; the step is built instead")
                self._failed[diff_id] = message
            self._warn(message)
            raise RefusedCacheLayer(message) from None
        assert self.lease is not None
        self.lease.add(record.digest, record.diff_id)
        with self._lock:
            for key, kind, output in item.keys:
                self.put(key, kind, output)
            if record.digest not in self.fetched:
                self.fetched.append(record.digest)
                self.fetched_bytes += record.size
            self._pending.pop(diff_id, None)

    def borrowed(self) -> tuple[dict[str, CacheEntry], dict[str, Any]]:
        """The records taken from a source whose layers were never downloaded (by key, as the source
        has them) and those layers as the source holds them (by blob digest, to stream or mount from
        there): an export names them as they are, so a cache written from this build keeps every
        step it took without this runner downloading a layer it did not need."""
        entries: dict[str, CacheEntry] = {}
        layers: dict[str, Any] = {}
        with self._lock:
            for item in self._pending.values():
                records = item.source.records
                for key, _, _ in item.keys:
                    entry = records.get(key) if records is not None else None
                    if entry is not None and entry.layer is not None:
                        entries[key] = entry
                        layers.setdefault(entry.layer.digest, item.source.backend.layer(entry))
        return entries, layers

    def close(self) -> None:
        if self._warming is not None:
            self._warming.join()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def restore_mount(self, mount_id: str, path: Path) -> bool:
        """Fill the new cache mount directory `path` with the contents a source exported for
        `mount_id` (checked at the store's door, then unpacked); whether one had it."""
        from layerbuild.layer import apply_layer

        for source in self._sources:
            entry = self._records(source).mounts.get(mount_id)
            if entry is None:
                continue
            try:
                record = source.backend.fetch_layer(self.store, entry)
                with self.store.reading_blob(record.digest) as blob:
                    apply_layer(blob, path, record_owners=os.geteuid() != 0)
            except LayerbuildError as exc:
                self._warn(f"the cache mount {mount_id!r} of cache {source.backend.name} was not restored: "
                           f"{exc.message}")
                continue
            return True
        return False

    def summary(self) -> str:
        """What the imported caches gave this build, for its progress."""
        if not self.asked:
            return "imported caches: not read (the store had every step)"
        return (f"imported caches: {self.used} step(s) taken, {len(self.fetched)} layer(s) downloaded "
                f"({self.fetched_bytes / 1e6:.1f} MB)")

    def explain(self, record: StepRecord) -> str | None:
        """Why no source had the step, against the nearest record of the same step."""
        if not self._sources:
            return None
        parts = []
        for source in self._sources:
            if source.records is None:
                continue
            near = source.records.nearest(record.stage, record.text, dict(record.files or {}))
            what = f"no record in {source.backend.name} for this step"
            if near is not None and near[1]:
                shown = ", ".join(near[1][:3]) + (f" and {len(near[1]) - 3} more" if len(near[1]) > 3 else "")
                what += f"; the nearest differs in {shown}"
            elif near is not None:
                what += "; the nearest has the same files but other inputs before it"
            parts.append(what)
        return "; ".join(parts) or None


def chain_stages(plan: BuildPlan) -> set[str]:
    """The labels of the stages whose steps make the final image: the target and its FROM stages."""
    stage = plan.stage(plan.target)
    labels = {stage.label}
    while isinstance(stage.base, StageRef):
        stage = plan.stage(stage.base.index)
        labels.add(stage.label)
    return labels


def export_entries(store: Store, plan: BuildPlan, records: Sequence[StepRecord], *, mode: str,
                   compression: str, platform: str, layers: bool = True,
                   epoch: int | None = None, borrowed: Mapping[str, CacheEntry] | None = None) -> list[CacheEntry]:
    """The cache records of this build's steps (the final image's for mode=min, every stage's for
    max), each with its layer blob in the compression asked for (made once and kept in the store);
    a step that reads other stages' files also under its key by their results. Without `layers`, a
    layer step's record names its diff_id only (an inline cache's: the blob is the image's own). With
    `epoch` (SOURCE_DATE_EPOCH) the records say the steps were made then. `borrowed`: records taken
    from an imported cache and never downloaded (`LayeredCache.borrowed`), exported as they are,
    their blobs the source's."""
    keep = chain_stages(plan) if mode == "min" else None
    out: list[CacheEntry] = []
    for rec in records:
        if rec.input is None or (keep is not None and rec.stage not in keep):
            continue
        for key in dict.fromkeys(k for k in (rec.input, rec.alias) if k is not None):
            entry = _entry(store, rec, key, compression=compression, platform=platform, layers=layers, epoch=epoch)
            if entry is None and layers and borrowed and key in borrowed:
                entry = dataclasses.replace(borrowed[key], stage=rec.stage, instruction=rec.text, platform=platform)
            if entry is not None:
                out.append(entry)
    return out


def _entry(store: Store, rec: StepRecord, key: str, *, compression: str, platform: str, layers: bool,
           epoch: int | None) -> CacheEntry | None:
    """The cache record of `rec` under `key`, or None when the store has no record or layer for it."""
    from layerbuild.image.manifest import Descriptor
    from layerbuild.image.storeimage import gzip_variant
    from layerbuild.store import MEDIA_LAYER_ZSTD

    cached = store.index.get_cache(key, touch=False)
    if cached is None:
        return None
    meta = cached.metadata if isinstance(cached.metadata, dict) else {}
    diff_id = cached.result or None
    desc = None
    diff_size = None
    variants: list[LayerRecord] = []
    if diff_id is not None:
        variants = store.present_layers(diff_id)
        if not variants:
            return None
        diff_size = variants[0].diff_size
        if not layers:
            variants = []
    if variants:
        layer = next((r for r in variants if r.media_type == MEDIA_LAYER_ZSTD), variants[0])
        if compression == "gzip":
            layer = gzip_variant(store, layer)
        elif layer.media_type != MEDIA_LAYER_ZSTD:
            layer = variants[0]
        desc = Descriptor(layer.media_type, layer.digest, layer.size)
    files = {k: v for k, v in ((p, short_fingerprint(fp)) for p, fp in (rec.files or {}).items()) if v}
    return CacheEntry(
        key=key, kind=rec.kind, diff_id=diff_id, layer=desc, diff_size=diff_size,
        size=desc.size if desc is not None else None,
        created=float(epoch) if epoch is not None else float(meta.get("created") or cached.created),
        platform=platform, stage=rec.stage, instruction=rec.text, files=files,
    )  # fmt: skip


def plan_cache_mounts(plan: BuildPlan) -> list[str]:
    """The ids of the shared (not private) cache mounts the plan's RUN steps use."""
    from layerbuild.plan import CacheMountDef, Exec

    ids: list[str] = []
    for stage in plan.stages:
        for step in stage.steps:
            if isinstance(step.op, Exec):
                for mount in step.op.mounts:
                    if isinstance(mount, CacheMountDef) and mount.sharing != "private" and mount.id not in ids:
                        ids.append(mount.id)
    return ids


def export_mounts(store: Store, lease: Lease, ids: Sequence[str], mount_dir: Callable[[str], Path]) -> list[MountEntry]:
    """Each cache mount's directory as a zstd tar blob of the store (sorted names, so unchanged
    contents give the same blob, which an export does not send again)."""
    import zstandard

    from layerbuild.image.manifest import Descriptor
    from layerbuild.layer.frames import ZSTD_LEVEL
    from layerbuild.store import MEDIA_LAYER_ZSTD

    out: list[MountEntry] = []
    for mount_id in ids:
        root = mount_dir(mount_id)
        if not root.is_dir():
            continue
        with store.blobs.writer() as w:
            sink = _TarSink(w, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj())
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for path in sorted(_walk(root)):
                    tar.add(path, arcname=os.path.relpath(path, root), recursive=False)
            sink.finish()
        diff_id = "sha256:" + sink.hash.hexdigest()
        record = store.index.put_layer(w.info.digest, diff_id, w.info.size, sink.size, MEDIA_LAYER_ZSTD)
        lease.add(record.digest, diff_id)
        out.append(MountEntry(mount_id, diff_id, Descriptor(MEDIA_LAYER_ZSTD, record.digest, record.size)))
    return out


class _TarSink:
    """Where a tar is written: hashed (its diff_id), counted, and compressed into a blob writer."""

    def __init__(self, writer: Any, compressor: Any) -> None:
        import hashlib

        self._w, self._c = writer, compressor
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._w.write(self._c.compress(data))
        return len(data)

    def finish(self) -> None:
        self._w.write(self._c.flush())


def _walk(root: Path) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        found.extend(os.path.join(dirpath, n) for n in (*dirnames, *filenames))
    return found
