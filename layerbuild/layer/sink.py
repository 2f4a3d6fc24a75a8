"""The one streaming pass behind a layer: hash the tar (diff_id), compress it, hash and write the blob.

The tar producer hands over chunks and goes back to reading files while a worker thread hashes and
compresses; sha256 and zstd release the GIL and zstd runs its own worker threads, so reading, hashing and
compressing overlap. The queue between them is bounded, so memory stays flat whatever the layer size.
"""

from __future__ import annotations

import enum
import hashlib
import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import zstandard

from layerbuild.errors import LayerbuildError
from layerbuild.layer.frames import Frame, FramedZstd, Reuse

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

_QUEUE_CHUNKS = 8  # with ~1 MiB chunks: at most ~8 MiB of tar in flight
_QUEUE_FRAMES = 2  # compressed frames (up to HARD_GROUP each) waiting for the blob writer
_STOP = object()


class Compression(enum.Enum):
    """How the tar stream is stored; the value is the OCI media type."""

    ZSTD = MEDIA_TYPE_ZSTD
    GZIP = MEDIA_TYPE_GZIP
    NONE = MEDIA_TYPE_TAR


@dataclass(frozen=True)
class LayerInfo:
    """What a written layer is: its identity (diff_id) and the blob that stores it (digest, size).

    For zstd, `frames` lists the blob's frames, so that a later, similar layer can reuse them
    (`reused` says how many this one took from an earlier layer).
    """

    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    media_type: str = MEDIA_TYPE_ZSTD
    frames: tuple[Frame, ...] = ()
    reused: int = 0


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


def _compressor(compression: Compression, level: int | None, threads: int) -> _Compressor:
    if compression is Compression.ZSTD:
        cctx = zstandard.ZstdCompressor(
            level=3 if level is None else level, threads=threads, write_checksum=True
        )
        obj: Any = cctx.compressobj()
        return obj  # type: ignore[no-any-return]
    if compression is Compression.GZIP:
        # wbits=31: a gzip wrapper whose header has mtime 0 and no file name, so output is reproducible.
        return zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)
    return _Identity()


class LayerSink:
    """Accepts the tar stream in chunks; `close()` finishes the blob and says what was written.

    The caller owns `out` and closes it; the sink only writes to it, from its worker thread.
    """

    def __init__(
        self, out: BinaryIO, compression: Compression, *, level: int | None = None, threads: int = -1,
        reuse: Reuse | None = None,
    ):
        self._out = out
        self._compression = compression
        # zstd is written as independent frames (see frames.py); gzip and plain tar as one stream.
        self._framed = FramedZstd(3 if level is None else level, threads, reuse) \
            if compression is Compression.ZSTD else None
        self._compressor = _compressor(compression, level, threads) if self._framed is None else _Identity()
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self._tar_size = 0
        self._blob_size = 0
        self._queue: queue.Queue[object] = queue.Queue(_QUEUE_CHUNKS)
        # The blob is hashed and written on a thread of its own, so that hashing the tar, hashing
        # the blob and compressing (all GIL-free) overlap instead of taking turns.
        self._blobs: queue.Queue[object] = queue.Queue(_QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="layer-sink", daemon=True)
        self._writer = threading.Thread(target=self._write_blob, name="layer-blob", daemon=True)
        self._thread.start()
        self._writer.start()

    def _emit(self, data: bytes) -> None:
        if data:
            self._blobs.put(data)

    def _write_blob(self) -> None:
        try:
            while True:
                data = self._blobs.get()
                if data is _STOP:
                    return
                assert isinstance(data, bytes)
                self._blob_hash.update(data)
                self._blob_size += len(data)
                self._out.write(data)
        except BaseException as exc:
            self._error = self._error or exc
            while self._blobs.get() is not _STOP:
                pass

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    if self._framed is not None:
                        self._framed.finish(self._emit)
                    self._emit(self._compressor.flush())
                    return
                assert isinstance(item, tuple)
                chunk, marks = item
                self._tar_hash.update(chunk)
                self._tar_size += len(chunk)
                if self._framed is not None:
                    self._framed.feed(chunk, marks, self._emit)
                else:
                    self._emit(self._compressor.compress(chunk))
        except BaseException as exc:
            self._error = self._error or exc
            if self._framed is not None:
                self._framed.close()
            # Keep draining so the producer never blocks on a full queue after a failure.
            while self._queue.get() is not _STOP:
                pass

    def write(self, chunk: bytes, marks: Sequence[tuple[int, bytes]] = ()) -> None:
        """Add `chunk` of the tar; `marks` are (offset in chunk, path) of entries starting in it."""
        if self._error is not None:
            raise self._error
        self._queue.put((chunk, tuple(marks)))

    def _join(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        self._blobs.put(_STOP)
        self._writer.join()

    def close(self) -> LayerInfo:
        """Flush, wait for the workers, and describe the blob; raises what a worker hit, if anything."""
        self._join()
        if self._error is not None:
            raise self._error
        diff_id = "sha256:" + self._tar_hash.hexdigest()
        digest = diff_id if self._compression is Compression.NONE else "sha256:" + self._blob_hash.hexdigest()
        frames = tuple(self._framed.frames) if self._framed is not None else ()
        reused = self._framed.reused if self._framed is not None else 0
        return LayerInfo(diff_id, digest, self._blob_size, self._tar_size, self._compression.value, frames, reused)

    def abort(self) -> None:
        """Stop the workers after a producer-side failure; what was written to `out` is garbage."""
        self._join()


def drive(sink: LayerSink, produce: Callable[[LayerSink], None]) -> LayerInfo:
    """Run `produce(sink)` and finish the blob; on any failure stop the sink's workers first.

    OS errors become LayerbuildErrors (naming whether writing the tar or the blob failed)."""
    try:
        produce(sink)
    except OSError as exc:
        sink.abort()
        raise LayerbuildError(f"cannot write layer: {exc}") from exc
    except BaseException:
        sink.abort()
        raise
    try:
        return sink.close()
    except OSError as exc:
        raise LayerbuildError(f"cannot write layer blob: {exc}") from exc
