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
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Protocol

import zstandard

from layerbuild.errors import LayerbuildError
from layerbuild.layer.frames import ZSTD_LEVEL, Frame, FramedZstd, Out, Reuse, StateHash

MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

_QUEUE_CHUNKS = 8  # with ~1 MiB chunks: at most ~8 MiB of tar in flight
_QUEUE_FRAMES = 2  # compressed frames (up to HARD_GROUP each) waiting for the blob writer
_INLINE_BYTES = 1 << 20  # a layer's first bytes go through in the caller's thread (see LayerSink)
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
    (`reused` says how many this one took from an earlier layer), and `end_*_state` are the sha256
    states after the last one. Written with `pack_only`, the output holds only the frames without a
    `pack`; `digest` and `size` are those of the whole blob, all frames in order.
    """

    diff_id: str
    digest: str
    size: int
    uncompressed_size: int
    media_type: str = MEDIA_TYPE_ZSTD
    frames: tuple[Frame, ...] = ()
    reused: int = 0
    end_tar_state: bytes = b""
    end_blob_state: bytes = b""


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
            level=ZSTD_LEVEL if level is None else level, threads=threads, write_checksum=True
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
        reuse: Reuse | None = None, pack_only: bool = False,
    ):
        self._out = out
        self._compression = compression
        # zstd is written as independent frames (see frames.py); gzip and plain tar as one stream.
        self._framed = FramedZstd(ZSTD_LEVEL if level is None else level, threads, reuse, pack_only=pack_only) \
            if compression is Compression.ZSTD else None
        self._frame_hash = StateHash()  # the framed blob's digest (resumed from a saved state after a prefix)
        self._frames: list[Frame] = []
        self._diff_id = ""
        self._end_tar_state = b""
        self._groups: dict[tuple[int, int], str] = {}
        self._compressor = _compressor(compression, level, threads) if self._framed is None else _Identity()
        self._tar_hash = hashlib.sha256()
        self._blob_hash = hashlib.sha256()
        self._tar_size = 0
        self._blob_size = 0
        self._queue: queue.Queue[object] = queue.Queue(_QUEUE_CHUNKS)
        # The blob is hashed and written on a thread of its own, so that hashing the tar, hashing
        # the blob and compressing (all GIL-free) overlap instead of taking turns. A small layer
        # never needs them: its first _INLINE_BYTES are taken in the caller's thread, and the
        # threads start only when a layer grows past that (a hand-over costs more than the work).
        self._blobs: queue.Queue[object] = queue.Queue(_QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._inline = True
        self._inline_left = _INLINE_BYTES
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None

    def _start_threads(self) -> None:
        self._inline = False
        self._thread = threading.Thread(target=self._run, name="layer-sink", daemon=True)
        self._writer = threading.Thread(target=self._write_blob, name="layer-blob", daemon=True)
        self._thread.start()
        self._writer.start()

    def _put_blob(self, item: object) -> None:
        if self._inline:
            self._write_one(item)
        else:
            self._blobs.put(item)

    def _emit(self, data: bytes) -> None:
        if data:
            self._put_blob(data)

    def _emit_frame(self, out: Out) -> None:
        self._put_blob(out)

    def _take_frame(self, out: Out) -> None:
        if out.resume is not None:
            self._frame_hash = StateHash(out.resume)
        frame = out.frame
        if out.hash:
            assert out.data is not None
            frame = replace(frame, blob_state=self._frame_hash.state())
            self._frame_hash.update(out.data)
        if out.write:
            assert out.data is not None
            self._out.write(out.data)
        self._frames.append(frame)
        self._blob_size += frame.size

    def _write_one(self, data: object) -> None:
        if isinstance(data, Out):
            self._take_frame(data)
            return
        if isinstance(data, tuple):  # the whole layer was the old one's: its end state
            self._frame_hash = StateHash(data[1])
            return
        assert isinstance(data, bytes)
        self._blob_hash.update(data)
        self._blob_size += len(data)
        self._out.write(data)

    def _write_blob(self) -> None:
        try:
            while True:
                data = self._blobs.get()
                if data is _STOP:
                    return
                self._write_one(data)
        except BaseException as exc:
            self._error = self._error or exc
            while self._blobs.get() is not _STOP:
                pass

    def _finish_stream(self) -> None:
        if self._framed is not None:
            self._diff_id, self._end_tar_state, end = self._framed.finish(self._emit_frame)
            self._tar_size = self._framed.tar_size
            if end is not None:
                self._put_blob(("end", end))
        self._emit(self._compressor.flush())

    def _process(self, item: object) -> None:
        if isinstance(item, Frame):
            assert self._framed is not None
            self._framed.skip(item, self._emit_frame)
            return
        assert isinstance(item, tuple)
        chunk, marks = item
        if self._framed is not None:  # the framer hashes the tar, skipping what it can
            self._framed.feed(chunk, marks, self._emit_frame)
        else:
            self._tar_hash.update(chunk)
            self._tar_size += len(chunk)
            self._emit(self._compressor.compress(chunk))

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    self._finish_stream()
                    return
                self._process(item)
        except BaseException as exc:
            self._error = self._error or exc
            if self._framed is not None:
                self._framed.close()
            # Keep draining so the producer never blocks on a full queue after a failure.
            while self._queue.get() is not _STOP:
                pass

    def _give(self, item: object, size: int) -> None:
        """Hand `item` (a chunk and its marks, or a skipped frame) to the pipeline."""
        if self._error is not None:
            raise self._error
        if self._inline:
            self._inline_left -= size
            if self._inline_left >= 0:
                try:
                    self._process(item)
                except BaseException as exc:
                    self._error = exc
                    raise
                return
            self._start_threads()
        self._queue.put(item)

    def write(self, chunk: bytes, marks: Sequence[tuple[int, bytes]] = ()) -> None:
        """Add `chunk` of the tar; `marks` are (offset in chunk, path) of entries starting in it."""
        self._give((chunk, tuple(marks)), len(chunk))

    def skip(self, frame: Frame) -> None:
        """Take `frame` of the reused layer unread, as the layer's next group (see FramedZstd.skip)."""
        self._give(frame, 0)

    @property
    def can_skip(self) -> bool:
        return self._framed is not None and self._framed.can_skip

    def set_groups(self, groups: Sequence[tuple[int, int, str]]) -> None:
        """The groups the producer planned, (start, end, meta key) in the tar stream: each frame that
        is exactly one of them gets its meta key (a frame cut elsewhere gets none: never skipped)."""
        self._groups = {(start, end): mkey for start, end, mkey in groups}

    def _join(self, finish: bool = True) -> None:
        if self._inline:
            if finish and self._error is None:
                try:
                    self._finish_stream()
                except BaseException as exc:
                    self._error = exc
            if self._framed is not None and (not finish or self._error is not None):
                self._framed.close()
            return
        assert self._thread is not None and self._writer is not None
        self._queue.put(_STOP)
        self._thread.join()
        self._blobs.put(_STOP)
        self._writer.join()

    def close(self) -> LayerInfo:
        """Flush, wait for the workers, and describe the blob; raises what a worker hit, if anything."""
        self._join()
        if self._error is not None:
            raise self._error
        if self._framed is not None:
            frames: list[Frame] = []
            at = 0
            for frame in self._frames:
                frames.append(replace(frame, mkey=self._groups.get((at, at + frame.raw), "")))
                at += frame.raw
            return LayerInfo(self._diff_id, "sha256:" + self._frame_hash.hexdigest(), self._blob_size,
                             self._tar_size, self._compression.value, tuple(frames), self._framed.reused,
                             self._end_tar_state, self._frame_hash.state())
        diff_id = "sha256:" + self._tar_hash.hexdigest()
        digest = diff_id if self._compression is Compression.NONE else "sha256:" + self._blob_hash.hexdigest()
        return LayerInfo(diff_id, digest, self._blob_size, self._tar_size, self._compression.value)

    def abort(self) -> None:
        """Stop the workers after a producer-side failure; what was written to `out` is garbage."""
        self._join(finish=False)


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
