"""Bringing outside content in: a tar stream as a zstd layer blob, and a rootfs tarball as a tagged image."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import zstandard

from layerbuild.errors import StoreError, UsageError
from layerbuild.store.records import MEDIA_CONFIG, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST, LayerRecord

if TYPE_CHECKING:
    from layerbuild.store.store import Store

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


@dataclass(frozen=True)
class ImportResult:
    """The image `import_rootfs` made: manifest and config digests, its one layer, and its tag."""

    manifest: str
    config: str
    layer: LayerRecord
    tag: str


def normalize_tag(ref: str) -> str:
    """`name` → `name:latest`; `name:tag` and `host:port/name:tag` stay as they are."""
    if not ref or any(c.isspace() for c in ref) or "@" in ref:
        raise UsageError(f"invalid image name {ref!r}", hint="use NAME[:TAG]")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref if colon > slash else ref + ":latest"


def _decompressed(src: BinaryIO) -> Iterator[bytes]:
    """Chunks of the plain tar inside `src`, which may be gzip, zstd or uncompressed."""
    head = src.read(4)
    if head.startswith(_GZIP_MAGIC):
        inflater = zlib.decompressobj(31)
        data = head
        while data:
            out = inflater.decompress(data)
            if out:
                yield out
            if inflater.eof and inflater.unused_data:
                raise StoreError("concatenated gzip members are not supported in a layer")
            data = src.read(_CHUNK)
        if not inflater.eof:
            raise StoreError("truncated gzip stream")
        return
    if head.startswith(_ZSTD_MAGIC):
        prefixed = cast(BinaryIO, _Prefixed(head, src))
        reader = zstandard.ZstdDecompressor().stream_reader(prefixed, read_across_frames=True)
        while chunk := reader.read(_CHUNK):
            yield chunk
        return
    data = head
    while data:
        yield data
        data = src.read(_CHUNK)


class _Prefixed:
    """`src` with the bytes already sniffed put back in front."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = head
        self._src = src

    def read(self, n: int = -1) -> bytes:
        if self._head:
            out, self._head = self._head, b""
            return out
        return self._src.read(n)


def ingest_layer(store: Store, src: BinaryIO, *, level: int = 3) -> LayerRecord:
    """Store the tar in `src` (gzip, zstd or plain) as a zstd layer blob and record it.

    One pass: the plain tar is hashed into the diff_id while it is compressed into the blob writer,
    which hashes the compressed bytes into the digest. The tar is stored as given, not normalised.
    """
    diff = hashlib.sha256()
    diff_size = 0
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with store.blobs.writer() as w:
        compressor = cctx.compressobj()
        for chunk in _decompressed(src):
            diff.update(chunk)
            diff_size += len(chunk)
            w.write(compressor.compress(chunk))
        w.write(compressor.flush())
    diff_id = "sha256:" + diff.hexdigest()
    return store.index.put_layer(w.info.digest, diff_id, w.info.size, diff_size, MEDIA_LAYER_ZSTD)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_rootfs(store: Store, src: BinaryIO, ref: str, *, architecture: str | None = None) -> ImportResult:
    """Make a one-layer image from a rootfs tarball and tag it `ref`, like `docker import`."""
    tag = normalize_tag(ref)
    arch = architecture or _ARCH.get(platform.machine(), platform.machine())
    with store.lease() as lease:
        layer = ingest_layer(store, src)
        lease.add(layer.digest, layer.diff_id)
        created = _created()
        config = _canonical(
            {
                "architecture": arch,
                "os": "linux",
                "created": created,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                "history": [{"created": created, "created_by": "layerbuild import"}],
            }
        )
        cinfo = store.blobs.put(config)
        lease.add(cinfo.digest)
        manifest = _canonical(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": cinfo.digest, "size": cinfo.size},
                "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
            }
        )
        minfo = store.blobs.put(manifest)
        lease.add(minfo.digest)
        store.index.put_image(cinfo.digest, "config", MEDIA_CONFIG, cinfo.size, [layer.diff_id])
        store.index.put_image(
            minfo.digest, "manifest", MEDIA_MANIFEST, minfo.size, [cinfo.digest, layer.digest]
        )
        store.index.set_tag(tag, minfo.digest)
    return ImportResult(minfo.digest, cinfo.digest, layer, tag)
