"""Bringing an outside tar stream (gzip, zstd or plain) into the store as a zstd layer blob.

The stream is checked at the door as it is read (see `admit`): a hostile entry, a truncated or corrupt
stream, a digest that does not match, or more unpacked bytes than the store's disk has free are
refused before the layer is recorded, and the blob being written is dropped. Memory stays bounded
whatever the compression ratio: the stream is inflated a chunk at a time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import BinaryIO

import zstandard

from layerbuild.errors import DigestMismatchError, UnsafeArchiveError
from layerbuild.layer.admit import check_stream
from layerbuild.layer.frames import ZSTD_LEVEL
from layerbuild.layer.reader import ChunkStream
from layerbuild.store import MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD, LayerRecord, Store

MAX_LAYER_BYTES = 1 << 42  # unpacked, on top of the free-space bound


class _Counted:
    """`src` read through a sha256 and a byte count, refusing to read past `limit` bytes."""

    def __init__(self, src: BinaryIO, limit: int | None, what: str, *, hashing: bool,
                 sink: Callable[[bytes | memoryview], object] | None = None) -> None:
        self._src = src
        self._limit = limit
        self._what = what
        self.hash = hashlib.sha256() if hashing else None
        self._sink = sink
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        if self._limit is not None:
            n = self._limit - self.size + 1 if n < 0 else min(n, self._limit - self.size + 1)
        data = self._src.read(n)
        self.size += len(data)
        if self._limit is not None and self.size > self._limit:
            raise UnsafeArchiveError(f"{self._what} is larger than its declared {self._limit} bytes")
        if self.hash is not None:
            self.hash.update(data)
        if self._sink is not None and data:
            self._sink(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        """As `read`, into `buffer` (a decompressor's own): the bytes are not copied on the way."""
        view = memoryview(buffer).cast("B")
        if self._limit is not None:
            view = view[: max(0, self._limit - self.size + 1)]
        into = getattr(self._src, "readinto", None)
        if into is None:
            data = self._src.read(len(view))
            n = len(data)
            view[:n] = data
        else:
            n = into(view)
        self.size += n
        if self._limit is not None and self.size > self._limit:
            raise UnsafeArchiveError(f"{self._what} is larger than its declared {self._limit} bytes")
        if n:
            got = view[:n]
            if self.hash is not None:
                self.hash.update(got)
            if self._sink is not None:
                self._sink(got)
        return n


class _Tee(ChunkStream):
    """A ChunkStream that hands every uncompressed chunk it reads to `sink` as well."""

    def __init__(self, blob: BinaryIO, *, max_bytes: int, sink: object) -> None:
        self._sink = sink
        super().__init__(blob, max_bytes=max_bytes)

    def _next_chunk(self) -> bytes:
        chunk = super()._next_chunk()
        if chunk:
            self._sink(chunk)  # type: ignore[operator]
        return chunk


def free_bytes(store: Store) -> int:
    """Bytes free for unprivileged writers on the filesystem of the store."""
    st = os.statvfs(store.layout.root)
    return st.f_bavail * st.f_frsize


_KEPT_TYPES = {"gzip": MEDIA_LAYER_GZIP, "zstd": MEDIA_LAYER_ZSTD, "tar": MEDIA_LAYER_TAR}


def ingest_layer(store: Store, src: BinaryIO, *, level: int = ZSTD_LEVEL, what: str = "the layer",
                 expected_digest: str | None = None, expected_size: int | None = None,
                 expected_diff_id: str | None = None, max_bytes: int | None = None,
                 source_checks_digest: bool = False, keep: bool = False) -> LayerRecord:
    """Check the tar in `src` (gzip, zstd or plain) entry by entry and store it as a layer blob: as
    zstd, or with `keep` as the very bytes of `src` (what a pull does, as containerd and skopeo do:
    no recompression, and the image keeps its registry digests).

    One pass: the plain tar is hashed into the diff_id while it is compressed into the blob writer
    (or while `src`'s bytes go to it as they are read), which hashes the bytes it gets into the
    digest. The tar is stored as given, not normalised.
    `expected_digest`/`expected_size` are what a manifest says of the bytes of `src`, `expected_diff_id`
    what a config says of the tar; a mismatch raises DigestMismatchError and nothing is recorded.
    Unpacked bytes are bounded by `max_bytes` and by the free space of the store's filesystem.
    `source_checks_digest`: `src` itself raises DigestMismatchError at its end when its bytes do not
    hash to `expected_digest` (a registry's blob stream does), so they are not hashed twice; `src` is
    then read to its end before anything is recorded.
    """
    budget = min(MAX_LAYER_BYTES if max_bytes is None else max_bytes, free_bytes(store))
    # A kept blob is hashed by its writer: that digest is checked against `expected_digest`.
    own_hash = expected_digest is not None and not source_checks_digest and not keep
    with store.blobs.writer() as w:
        counted = _Counted(src, expected_size, what, hashing=own_hash, sink=w.write if keep else None)
        if keep:
            # Read ahead: the blob's own hash and write happen on the way, on the read-ahead's thread.
            stream = ChunkStream(counted, max_bytes=budget, read_ahead=True)  # type: ignore[arg-type]
        else:
            compressor = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
            stream = _Tee(counted, max_bytes=budget,  # type: ignore[arg-type]
                          sink=lambda chunk: w.write(compressor.compress(chunk)))
        try:
            diff_id = check_stream(stream, what, max_bytes=budget)
            diff_size = stream.size
        except UnsafeArchiveError:
            stream.close()
            # Bytes that are not the blob named (damaged on the way) are a digest mismatch, which a
            # caller may read again, not a hostile archive: read the rest, and let the digest tell.
            if expected_digest is not None and (keep or own_hash or source_checks_digest):
                while counted.read(1 << 20):
                    pass
                got = w.digest if keep else f"sha256:{counted.hash.hexdigest()}" if counted.hash else None
                if got is not None and got != expected_digest:
                    raise DigestMismatchError(f"{what} hashes to {got}, not to {expected_digest}",
                                              hint="the bytes were damaged on the way or edited; "
                                              "nothing was kept") from None
            raise
        finally:
            stream.close()
        if not keep:
            w.write(compressor.flush())
        if (source_checks_digest or keep) and counted.read(1):  # the end, where such a source checks its digest
            raise UnsafeArchiveError(f"{what} has bytes after the end of its tar stream",
                                     hint="the archive is damaged or was edited")
        if expected_size is not None and counted.size != expected_size:
            raise UnsafeArchiveError(f"{what} has {counted.size} bytes, not the {expected_size} it declares",
                                     hint="the archive is damaged or was edited")
        if keep:
            digest: str | None = w.digest
        else:
            digest = "sha256:" + counted.hash.hexdigest() if counted.hash is not None else None
        if (own_hash or keep) and expected_digest is not None and digest != expected_digest:
            raise DigestMismatchError(f"{what} hashes to {digest}, not to {expected_digest}",
                                      hint="the archive is damaged or was edited")
        if expected_diff_id is not None and diff_id != expected_diff_id:
            raise DigestMismatchError(f"{what} unpacks to {diff_id}, not to the {expected_diff_id} its config "
                                      "names", hint="the archive is damaged or was edited")
    media_type = _KEPT_TYPES[stream.format] if keep else MEDIA_LAYER_ZSTD
    return store.index.put_layer(w.info.digest, diff_id, w.info.size, diff_size, media_type)
