"""zstd layers as a sequence of independent frames, one per group of tar entries, that a rebuild can reuse.

Where the tar stream is cut into groups depends only on the entries' paths and sizes (a group ends
before an entry whose path hash picks it, once the group has some size, or when it grows too large), so
the same tree always gives the same frames, and an edit changes only the frames around it. Each group
is compressed on its own (in parallel on the machine's cores); a group whose bytes (xxh3-128) equal a
group of an earlier layer takes that layer's compressed frame instead of compressing again. The
concatenated frames are an ordinary zstd stream that any decoder reads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import xxhash
import zstandard

MIN_GROUP = 256 << 10  # below this a group never ends at a chosen path
PICK_MASK = 31  # about one entry in 32 may end a group
MAX_GROUP = 4 << 20  # at an entry boundary past this, a group always ends
HARD_GROUP = 8 << 20  # inside one big file, cut here anyway (memory bound)
_IN_FLIGHT = 2

Emit = Callable[[bytes], None]


@dataclass(frozen=True)
class Frame:
    """One frame of a layer blob: the xxh3-128 of its uncompressed bytes, their length, where it lies."""

    key: str
    raw: int
    offset: int
    size: int

    def to_json(self) -> list[object]:
        return [self.key, self.raw, self.offset, self.size]

    @staticmethod
    def from_json(data: Sequence[object]) -> Frame:
        key, raw, offset, size = data
        return Frame(str(key), int(raw), int(offset), int(size))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Reuse:
    """An earlier layer's blob and frames, offered to a writer of a similar layer."""

    blob: str  # path of the blob file
    frames: tuple[Frame, ...]


def ends_group(size: int, path: bytes) -> bool:
    """Whether the group of `size` bytes so far ends before an entry named `path`."""
    if size >= MAX_GROUP:
        return True
    return size >= MIN_GROUP and (xxhash.xxh3_64_intdigest(path) & PICK_MASK) == 0


class FramedZstd:
    """Collects the tar stream into groups and writes their frames in order through `emit`."""

    def __init__(self, level: int, threads: int, reuse: Reuse | None) -> None:
        self._level = level
        workers = (os.cpu_count() or 1) if threads <= 0 else threads
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zstd")
        self._pending: deque[tuple[str, int, Future[bytes] | bytes]] = deque()
        self._group: list[bytes] = []
        self._size = 0
        self._offset = 0
        self.frames: list[Frame] = []
        self.reused = 0
        self._reuse = {f.key: f for f in reuse.frames} if reuse is not None else {}
        self._reuse_fd: int | None = None
        if reuse is not None and self._reuse:
            try:
                self._reuse_fd = os.open(reuse.blob, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._reuse = {}  # the old blob is gone: compress everything

    def _compress(self, data: bytes) -> bytes:
        cctx = zstandard.ZstdCompressor(level=self._level, write_checksum=True, write_content_size=True)
        return cctx.compress(data)

    def _old_frame(self, key: str, raw: int) -> bytes | None:
        frame = self._reuse.get(key)
        if frame is None or frame.raw != raw or self._reuse_fd is None:
            return None
        data = os.pread(self._reuse_fd, frame.size, frame.offset)
        return data if len(data) == frame.size else None

    def _cut(self, emit: Emit) -> None:
        if not self._group:
            return
        data = b"".join(self._group)
        self._group.clear()
        self._size = 0
        key = xxhash.xxh3_128_hexdigest(data)
        old = self._old_frame(key, len(data))
        if old is not None:
            self.reused += 1
            self._pending.append((key, len(data), old))
        else:
            self._pending.append((key, len(data), self._pool.submit(self._compress, data)))
        while len(self._pending) > _IN_FLIGHT:
            self._drain_one(emit)

    def _drain_one(self, emit: Emit) -> None:
        key, raw, item = self._pending.popleft()
        blob = item if isinstance(item, bytes) else item.result()
        self.frames.append(Frame(key, raw, self._offset, len(blob)))
        self._offset += len(blob)
        emit(blob)

    def feed(self, chunk: bytes, marks: Sequence[tuple[int, bytes]], emit: Emit) -> None:
        """Add `chunk`; `marks` are (offset in chunk, path) of the entries that start inside it."""
        start = 0
        for offset, path in marks:
            if offset > start:
                piece = chunk[start:offset]
                self._group.append(piece)
                self._size += len(piece)
                start = offset
            if ends_group(self._size, path):
                self._cut(emit)
        rest = chunk[start:]
        if rest:
            self._group.append(rest)
            self._size += len(rest)
            if self._size >= HARD_GROUP:
                self._cut(emit)

    def finish(self, emit: Emit) -> None:
        self._cut(emit)
        while self._pending:
            self._drain_one(emit)
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._reuse_fd is not None:
            os.close(self._reuse_fd)
            self._reuse_fd = None
