"""Bringing an outside tar stream (gzip, zstd or plain) into the store as a zstd layer blob."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import BinaryIO, cast

import zstandard

from layerbuild.errors import StoreError
from layerbuild.layer.compression import sniff_compression
from layerbuild.store import MEDIA_LAYER_ZSTD, LayerRecord, Store

_CHUNK = 1 << 20


def _decompressed(src: BinaryIO) -> Iterator[bytes]:
    """Chunks of the plain tar inside `src`, which may be gzip, zstd or uncompressed."""
    head = src.read(4)
    fmt = sniff_compression(head)
    if fmt == "gzip":
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
    if fmt == "zstd":
        prefixed = cast(BinaryIO, _Prefixed(head, src))
        reader = zstandard.ZstdDecompressor().stream_reader(prefixed, read_across_frames=True)
        while chunk := reader.read(_CHUNK):
            yield chunk
        return
    data = head  # anything else is taken as a plain tar, as it always was
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
