"""The build's caches beyond the store: `--cache-from` sources read at the first local miss, and the
`--cache-to` export after the build (see registry.buildcache for the format).

A step is looked up in the store first; only when the store has no record is any `--cache-from`
source asked, in the order given (the branch's cache, then main's), and its records are fetched
then, once. A record found there has its layer brought into the store (checked against its digest
and diff_id; a cache entry that fails the check is refused, said so, and the step is built), and a
local record is written, so the next build hits locally without asking.
"""

from __future__ import annotations

import os
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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

    def read(self) -> tuple[CacheRecords, str | None]: ...

    def fetch_layer(self, store: Store, entry: CacheEntry | MountEntry) -> LayerRecord: ...

    def write(self, store: Store, entries: Sequence[CacheEntry], *, compression: str,
              max_size: int | None = None, mounts: Sequence[MountEntry] = ()) -> str: ...


def open_backend(spec: CacheSpec, client: Callable[[], object], *, platform: str = "linux/amd64") -> CacheBackend:
    """Where `spec` reads and writes (`type=inline` has no backend: the build writes it into its image)."""
    assert spec.type != "inline"
    if spec.type == "local":
        return LocalCache(spec.path)
    from layerbuild.registry.client import RegistryClient

    registry = client()
    assert isinstance(registry, RegistryClient)
    return RegistryCache(registry, spec.ref, platform=platform)


@dataclass
class _Source:
    backend: CacheBackend
    records: CacheRecords | None = None
    error: str | None = None


class LayeredCache(StoreCache):
    """The store's cache, then the `--cache-from` sources (see the module docstring)."""

    def __init__(self, store: Store, lease: Lease, sources: Sequence[CacheBackend],
                 warn: Callable[[str], None]) -> None:
        super().__init__(store, lease)
        self._sources = [_Source(b) for b in sources]
        self._lock = threading.Lock()
        self._warn = warn
        self.fetched: list[str] = []  # digests of the layers brought from a source
        self.fetched_bytes = 0
        self.used = 0  # steps answered by a source
        self.asked = False  # whether any source's records were read

    def _records(self, source: _Source) -> CacheRecords:
        with self._lock:
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
        for source in self._sources:
            entry = self._records(source).get(key)
            if entry is None:
                continue
            if entry.diff_id is None:
                output = Output(None, size=None, created=entry.created)
            else:
                try:
                    record = source.backend.fetch_layer(self.store, entry)
                except LayerbuildError as exc:
                    self._warn(f"refused the record of `{entry.instruction}` in cache {source.backend.name}: "
                               f"{exc.message}; the step is built instead")
                    continue
                assert self.lease is not None
                self.lease.add(record.digest, record.diff_id)
                with self._lock:
                    if record.digest not in self.fetched:
                        self.fetched.append(record.digest)
                        self.fetched_bytes += record.size
                output = Output(record.diff_id, size=record.size, created=entry.created)
            self.put(key, entry.kind, output)
            with self._lock:
                self.used += 1
            return super().get(key) or output
        return None

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
                   epoch: int | None = None) -> list[CacheEntry]:
    """The cache records of this build's steps (the final image's for mode=min, every stage's for
    max), each with its layer blob in the compression asked for (made once and kept in the store);
    without `layers`, a layer step's record names its diff_id only (an inline cache's: the blob is the
    image's own). With `epoch` (SOURCE_DATE_EPOCH) the records say the steps were made then."""
    from layerbuild.image.manifest import Descriptor
    from layerbuild.image.storeimage import gzip_variant
    from layerbuild.store import MEDIA_LAYER_ZSTD

    keep = chain_stages(plan) if mode == "min" else None
    out: list[CacheEntry] = []
    for rec in records:
        if rec.input is None or (keep is not None and rec.stage not in keep):
            continue
        cached = store.index.get_cache(rec.input, touch=False)
        if cached is None:
            continue
        meta = cached.metadata if isinstance(cached.metadata, dict) else {}
        diff_id = cached.result or None
        desc = None
        diff_size = None
        variants: list[LayerRecord] = []
        if diff_id is not None:
            variants = [r for r in store.index.layers_by_diff_id(diff_id) if store.blobs.stat(r.digest) is not None]
            if not variants:
                continue
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
        out.append(CacheEntry(
            key=rec.input, kind=rec.kind, diff_id=diff_id, layer=desc, diff_size=diff_size,
            size=desc.size if desc is not None else None,
            created=float(epoch) if epoch is not None else float(meta.get("created") or cached.created),
            platform=platform, stage=rec.stage, instruction=rec.text, files=files,
        ))  # fmt: skip
    return out


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
    from layerbuild.store import MEDIA_LAYER_ZSTD

    out: list[MountEntry] = []
    for mount_id in ids:
        root = mount_dir(mount_id)
        if not root.is_dir():
            continue
        with store.blobs.writer() as w:
            sink = _TarSink(w, zstandard.ZstdCompressor(level=3).compressobj())
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
