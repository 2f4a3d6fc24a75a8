"""The store as an implementation of the image protocol: images read by name or id, and the sink that
brings an image in through the store's door (`receive_layer`'s checks, then `write_image`).

Only this module and `store_io` reach for blobs: everything else reads them through these layers.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from layerbuild.errors import DigestMismatchError, LayerbuildError, UsageError
from layerbuild.image.config import ImageConfig, ImageFormatError
from layerbuild.image.manifest import Descriptor, Manifest
from layerbuild.image.protocol import Image, Layer, check_bytes, decompressed, sha256
from layerbuild.image.receive import CONFIG_TYPES, LAYER_TYPES
from layerbuild.image.store_io import StoredImage, read_blob, resolve_image, write_image
from layerbuild.store import MEDIA_LAYER_GZIP, LayerRecord, Store
from layerbuild.store.blobs import corrupt_blob, read_to_end


@dataclass(frozen=True)
class StoreLayer:
    """A layer blob of the store. Its readers check the blob's digest (CorruptBlobError on damage);
    the diff_id was computed from those very bytes when the blob was admitted."""

    store: Store
    record: LayerRecord

    @property
    def digest(self) -> str:
        return self.record.digest

    @property
    def diff_id(self) -> str:
        return self.record.diff_id

    @property
    def size(self) -> int:
        return self.record.size

    @property
    def diff_size(self) -> int | None:
        return self.record.diff_size

    @property
    def media_type(self) -> str:
        return self.record.media_type

    def _present(self) -> None:
        if self.store.blobs.stat(self.digest) is None:
            raise LayerbuildError(f"blob {self.digest} is missing from the store", hint="run `layerbuild fsck`")

    @contextlib.contextmanager
    def compressed(self, *, verify: bool = True) -> Iterator[BinaryIO]:
        self._present()
        if verify:
            with self.store.reading_blob(self.digest) as blob:
                yield blob
        else:
            with self.store.open_blob(self.digest, verify=False) as blob:
                yield blob

    @contextlib.contextmanager
    def uncompressed(self) -> Iterator[BinaryIO]:
        self._present()
        with self.store.reading_blob(self.digest) as blob:
            yield decompressed(blob)


@dataclass(frozen=True)
class StoreImage:
    """An image of the store (see StoredImage); `layers` may be other variants of the same diff_ids
    (the gzip ones of `store_image(..., compression="gzip")`), in which case the manifest is rebuilt."""

    store: Store
    stored: StoredImage
    records: tuple[LayerRecord, ...]
    _cache: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def manifest(self) -> Manifest:
        if self.records == self.stored.layers:
            return self.stored.manifest
        return Manifest(config=self.stored.manifest.config,
                        layers=tuple(Descriptor(r.media_type, r.digest, r.size) for r in self.records))

    @property
    def manifest_bytes(self) -> bytes:
        if "manifest" not in self._cache:
            self._cache["manifest"] = (read_blob(self.store, self.stored.manifest_digest, "manifest")
                                       if self.records == self.stored.layers else self.manifest.to_json())
        return self._cache["manifest"]

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @property
    def digest(self) -> str:
        if self.records == self.stored.layers:
            return self.stored.manifest_digest
        return sha256(self.manifest_bytes)

    @property
    def config_descriptor(self) -> Descriptor:
        return self.stored.manifest.config

    @property
    def config_bytes(self) -> bytes:
        if "config" not in self._cache:
            self._cache["config"] = read_blob(self.store, self.stored.config_digest, "config")
        return self._cache["config"]

    @property
    def config(self) -> ImageConfig:
        return self.stored.config

    @property
    def layers(self) -> tuple[StoreLayer, ...]:
        return tuple(StoreLayer(self.store, r) for r in self.records)

    @property
    def tags(self) -> tuple[str, ...]:
        return self.stored.tags


def store_image(store: Store, image: StoredImage | str, *, compression: str = "stored") -> StoreImage:
    """The store's image `image` (a StoredImage, or a reference: tag, id, digest) as a protocol Image.

    `compression="gzip"` gives its layers as gzip blobs (made once and kept in the store), as every
    OCI tool reads them; "stored" as the store keeps them (zstd)."""
    stored = resolve_image(store, image) if isinstance(image, str) else image
    if compression == "gzip":
        return StoreImage(store, stored, tuple(gzip_variant(store, layer) for layer in stored.layers))
    if compression in ("stored", "zstd"):
        return StoreImage(store, stored, stored.layers)
    raise UsageError(f"unknown compression {compression!r}", hint="use gzip or zstd")


def gzip_variant(store: Store, layer: LayerRecord) -> LayerRecord:
    """The layer as a gzip blob (made once and kept in the store): what every OCI tool reads."""
    for record in store.index.layers_by_diff_id(layer.diff_id):
        if record.media_type == MEDIA_LAYER_GZIP and store.blobs.stat(record.digest) is not None:
            return record
    # mtime 0 and no file name in the gzip header: the same layer always gives the same blob.
    source = StoreLayer(store, layer)
    with source.compressed() as src, store.blobs.writer() as out:
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        reader = decompressed(src)
        tar = hashlib.sha256()  # the diff_id checked too: a layer kept as a recipe had it continued
        while chunk := reader.read(1 << 20):
            tar.update(chunk)
            out.write(gz.compress(chunk))
        read_to_end(src)  # checked before the new blob is committed: a damaged source makes none
        if "sha256:" + tar.hexdigest() != layer.diff_id:
            raise corrupt_blob(layer.digest, f"its tar hashes to sha256:{tar.hexdigest()}, not {layer.diff_id}")
        out.write(gz.flush())
    info = out.info
    return store.index.put_layer(info.digest, layer.diff_id, info.size, layer.diff_size, MEDIA_LAYER_GZIP)


def ingest_checked(store: Store, layer: Layer, *, what: str) -> LayerRecord:
    """`layer` in the store: the record of its diff_id if the store has one, else its blob brought in
    as it is (see `ingest_layer(keep=True)`): checked against its size, digest and diff_id, and the
    archive door rules. A mismatch raises DigestMismatchError and nothing is recorded."""
    present = store.present_layers(layer.diff_id)
    if present:
        return present[0]
    if layer.media_type not in LAYER_TYPES:
        raise LayerbuildError(f"{what} has media type {layer.media_type!r}, which layerbuild cannot load")
    with layer.compressed(verify=False) as src:
        from layerbuild.layer.ingest import ingest_layer  # (the write side only: not on push's path)

        return ingest_layer(store, src, what=what, expected_size=layer.size,
                            expected_digest=None if layer.digest == layer.diff_id else layer.digest,
                            expected_diff_id=layer.diff_id, keep=True)


# How a sink tells its caller about each layer: (layer, status, bytes read so far). Statuses: `exists`
# (the store has its diff_id: nothing is read), `waiting`, `reading`, `retrying` (the bytes did not
# match; read again), `done`.
LayerObserver = Callable[[Layer, str, int], None]


class _Stopped(LayerbuildError):
    """Another layer of the same write failed: this one stops reading."""


class _Observed:
    """`src` read through a byte count told to `observe`, stopping when `stop` is set."""

    def __init__(self, src: BinaryIO, layer: Layer, observe: LayerObserver | None, stop: threading.Event) -> None:
        self._src, self._layer, self._observe, self._stop = src, layer, observe, stop
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self._stop.is_set():
            raise _Stopped("stopped: another layer failed")
        data = self._src.read(n)
        self.count += len(data)
        if self._observe is not None and data:
            self._observe(self._layer, "reading", self.count)
        return data

    def readinto(self, buffer: memoryview) -> int:
        if self._stop.is_set():
            raise _Stopped("stopped: another layer failed")
        into = getattr(self._src, "readinto", None)
        if into is None:
            view = memoryview(buffer).cast("B")
            data = self._src.read(len(view))
            n = len(data)
            view[:n] = data
        else:
            n = into(buffer)
        self.count += n
        if self._observe is not None and n:
            self._observe(self._layer, "reading", self.count)
        return n


class StoreSink:
    """Images into the store, through its door: each layer blob is checked against its descriptor
    (size, digest), its config's diff_id and the entry rules of `layer.admit` as it streams in and is
    kept as zstd (or as it came, with `keep`); then the config and a manifest are written and the tags set (`write_image`), all
    under one lease. Nothing of the source is trusted: its config bytes are checked against its
    manifest and parsed here.

    `reuse`: a layer whose diff_id the store already holds (a blob that is there) is not read at all
    (what pull wants: the diff_id comes from the config, which was checked against the manifest).
    `jobs`: how many layers are read at once. `attempts`: how often a layer whose bytes did not match
    is read again (a source that gives fresh bytes per `compressed()`, as a registry does).
    `keep`: each layer blob is stored as the very bytes it came as (checked all the same), not
    recompressed to zstd: what a pull does. `observe` is told how each layer goes (see
    LayerObserver), from the threads reading them. On a
    failure the other layers stop, the layers already stored stay as unreferenced blobs (a later
    write reuses them; prune removes them) and no manifest or tag is written."""

    def __init__(self, store: Store, *, reuse: bool = False, jobs: int = 1, attempts: int = 1,
                 observe: LayerObserver | None = None, keep: bool = False) -> None:
        self.store = store
        self.keep = keep
        self.last: StoredImage | None = None
        self.reuse = reuse
        self.jobs = max(1, jobs)
        self.attempts = max(1, attempts)
        self.observe = observe

    def _present(self, diff_id: str) -> LayerRecord | None:
        present = self.store.present_layers(diff_id)
        return present[0] if present else None

    def _receive(self, layer: Layer, diff_id: str, stop: threading.Event) -> LayerRecord:
        from layerbuild.layer.ingest import ingest_layer  # (the write side only: not on push's path)

        what = getattr(layer, "what", None) or f"layer {layer.digest}"
        if layer.media_type not in LAYER_TYPES:
            raise LayerbuildError(f"{what} has media type {layer.media_type!r}, which layerbuild cannot "
                                  "load", hint=f"layers must be one of {', '.join(LAYER_TYPES)}")
        # A kept blob is hashed by the store's writer; else a source that checks its own digest saves
        # hashing the bytes twice.
        source_checks = getattr(layer, "checks_digest", False) and not self.keep
        for attempt in range(self.attempts):
            try:
                with layer.compressed(verify=source_checks) as src:
                    # A blob that is its own tar (digest == diff_id) is checked by the diff_id alone.
                    record = ingest_layer(self.store, _Observed(src, layer, self.observe, stop),  # type: ignore[arg-type]
                                          what=what, expected_size=layer.size,
                                          expected_digest=None if layer.digest == diff_id else layer.digest,
                                          expected_diff_id=diff_id,
                                          source_checks_digest=source_checks,
                                          keep=self.keep)
                break
            except DigestMismatchError:
                if attempt + 1 >= self.attempts or stop.is_set():
                    raise
                if self.observe is not None:
                    self.observe(layer, "retrying", 0)
        if self.observe is not None:
            self.observe(layer, "done", layer.size)
        return record

    def write(self, image: Image, tags: Sequence[str] = ()) -> str:
        desc = image.config_descriptor
        if desc.media_type not in CONFIG_TYPES:
            raise ImageFormatError(f"the image's config {desc.digest} is of media type {desc.media_type!r}")
        raw = check_bytes(image.config_bytes, desc, f"the config {desc.digest}")
        config = ImageConfig.from_json(raw)
        layers = image.layers
        if len(layers) != len(config.diff_ids):
            raise ImageFormatError(f"the image has {len(layers)} layer(s) but its config {desc.digest} names "
                                   f"{len(config.diff_ids)} diff_id(s)")
        with self.store.lease() as lease:
            records: list[LayerRecord | None] = [None] * len(layers)
            todo: list[int] = []
            for i, (layer, diff_id) in enumerate(zip(layers, config.diff_ids, strict=True)):
                found = self._present(diff_id) if self.reuse else None
                if found is not None:
                    lease.add(found.digest, found.diff_id)
                    # Held now: check it is still there (a prune may have run between the look and the lease).
                    if self.store.blobs.stat(found.digest) is not None:
                        records[i] = found
                        if self.observe is not None:
                            self.observe(layer, "exists", 0)
                        continue
                todo.append(i)
                if self.observe is not None:
                    self.observe(layer, "waiting", 0)
            stop = threading.Event()

            def receive(i: int) -> LayerRecord:
                try:
                    record = self._receive(layers[i], config.diff_ids[i], stop)
                except BaseException:
                    stop.set()
                    raise
                lease.add(record.digest, record.diff_id)
                return record

            if self.jobs == 1 or len(todo) <= 1:
                for i in todo:
                    records[i] = receive(i)
            else:
                from concurrent.futures import ThreadPoolExecutor  # (its logging import: only when used)

                with ThreadPoolExecutor(max_workers=min(self.jobs, len(todo)), thread_name_prefix="layer") as pool:
                    futures = {i: pool.submit(receive, i) for i in todo}
                errors: list[BaseException] = []
                for i, future in futures.items():
                    exc = future.exception()
                    if exc is None:
                        records[i] = future.result()
                    else:
                        errors.append(exc)
                if errors:  # the first real failure, not another layer's having stopped for it
                    raise next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
            done = [r for r in records if r is not None]
            self.last = write_image(self.store, config, tags, layers=done, raw_config=raw, lease=lease)
        return self.last.manifest_digest
