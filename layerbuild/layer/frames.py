"""zstd layers as a sequence of independent frames, one per group of tar entries, that a rebuild can reuse.

Where the tar stream is cut into groups depends only on the entries' paths and sizes (a group ends
before an entry whose path hash picks it, once the group has some size, or when it grows too large), so
the same tree always gives the same frames, and an edit changes only the frames around it. Each group
is compressed on its own (in parallel on the machine's cores); a group whose bytes (xxh3-128) equal a
group of an earlier layer takes that layer's compressed frame instead of compressing again. The
concatenated frames are an ordinary zstd stream that any decoder reads.

The writer also keeps the sha256 states of the tar and of the blob streams where each frame starts
(see sha256state). An edit builds on them: the leading groups that are the same as the previous
layer's, in the same places, are neither hashed nor read back, and both digests continue from the
saved states at the first group that differs. With `pack_only`, frames taken from an earlier layer
are not written out again: the output holds only the new frames and the store keeps the layer as a
recipe of both (see store.chunks).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import xxhash
import zstandard

from layerbuild.errors import LayerbuildError
from layerbuild.layer import sha256state

# The store's zstd level. Level 1, not zstd's default 3: on the bigcopy scenario (100 MB of sources and
# data) it made a cold build's COPY step 0.40 s instead of 0.75 s and the whole build 0.73 of the time,
# for a blob 10 % larger (61.8 MB against 55.9 MB). BuildKit keeps its layers uncompressed. A layer's
# frames are reused only by a writer at the same level (see `worker.ops`), so a blob never mixes levels
# and the same inputs give the same bytes in every store.
ZSTD_LEVEL = 1
MIN_GROUP = 256 << 10  # below this a group never ends at a chosen path
PICK_MASK = 31  # about one entry in 32 may end a group
MAX_GROUP = 4 << 20  # at an entry boundary past this, a group always ends
HARD_GROUP = 4 << 20  # inside one big file, cut here anyway, exactly (memory bound)
_IN_FLIGHT = 2
_INLINE_GROUP = 64 << 10  # a group this small is compressed where it is cut, not by a worker



@dataclass(frozen=True)
class Frame:
    """One frame of a layer blob: the xxh3-128 of its uncompressed bytes, their length, where it lies
    (`offset` in the blob being written, or in the blob `pack` when it is another's), and the sha256
    states of the tar and blob streams where it starts (empty when unknown)."""

    key: str
    raw: int
    offset: int
    size: int
    pack: str | None = None
    tar_state: bytes = b""
    blob_state: bytes = b""
    mkey: str = ""  # the group's key by its headers and files' content keys, known without reading them

    def to_json(self) -> list[object]:
        return [self.key, self.raw, self.offset, self.size]

    @staticmethod
    def from_json(data: Sequence[object]) -> Frame:
        key, raw, offset, size = data
        return Frame(str(key), int(raw), int(offset), int(size))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Reuse:
    """An earlier layer's frames, offered to a writer of a similar layer: frames without a `pack` lie
    in the file `blob`, the others in the file `packs[pack]`. `end_*_state` are the sha256 states
    after its last frame (with the frames' own states, what lets a writer skip an unchanged prefix)."""

    blob: str  # path of the blob file
    frames: tuple[Frame, ...]
    packs: Mapping[str, str] = field(default_factory=dict)
    end_tar_state: bytes = b""
    end_blob_state: bytes = b""

    @property
    def resumable(self) -> bool:
        return bool(self.frames and self.end_tar_state and self.end_blob_state
                    and all(f.tar_state and f.blob_state for f in self.frames))

    @property
    def skippable(self) -> bool:
        """Whether a writer may skip its unchanged leading groups by their meta keys alone."""
        return self.resumable and all(f.pack for f in self.frames)


def ends_group(size: int, path: bytes) -> bool:
    """Whether the group of `size` bytes so far ends before an entry named `path`."""
    if size >= MAX_GROUP:
        return True
    return size >= MIN_GROUP and (xxhash.xxh3_64_intdigest(path) & PICK_MASK) == 0


@dataclass(frozen=True)
class Out:
    """What the framer hands the blob writer, in blob order: a frame and its compressed bytes
    (`data`; None for a frame of the unchanged prefix that is not written out either), whether to
    write and whether to hash them (a frame of the unchanged prefix is not hashed: its blob state is
    the old one's), and the blob hash state to continue from first (where the prefix ends)."""

    frame: Frame
    data: bytes | None
    write: bool
    hash: bool
    resume: bytes | None = None


Emit = Callable[[Out], None]


class StateHash:
    """sha256 that can save its state where libcrypto is there (sha256state), hashlib elsewhere."""

    def __init__(self, state: bytes | None = None) -> None:
        self.resumable = sha256state.available()
        self._h: sha256state.Sha256 | hashlib._Hash = (
            sha256state.Sha256(state) if self.resumable else hashlib.sha256()
        )

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def state(self) -> bytes:
        return self._h.state() if isinstance(self._h, sha256state.Sha256) else b""

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class FramedZstd:
    """Collects the tar stream into groups, hashes the tar (diff_id), and hands their frames in order
    to `emit` (see Out). `pack_only`: frames taken from `reuse` are not written again."""

    def __init__(self, level: int, threads: int, reuse: Reuse | None, *, pack_only: bool = False) -> None:
        self._level = level
        self._workers = (os.cpu_count() or 1) if threads <= 0 else threads
        self._pool: ThreadPoolExecutor | None = None  # made for the first group worth a thread
        self._local = threading.local()
        # (frame, its bytes or their compression or None, write, hash, blob state to resume from)
        self._pending: deque[tuple[Frame, Future[bytes] | bytes | None, bool, bool, bytes | None]] = deque()
        self._group: list[bytes] = []
        self._size = 0
        self._written = 0  # bytes of new frames written so far (their offsets in the output)
        self._pack_only = pack_only
        self.reused = 0
        self.tar_size = 0
        self._old = reuse.frames if reuse is not None else ()
        self._reuse = {f.key: f for f in self._old}
        self._paths: dict[str | None, str] = {None: reuse.blob} if reuse is not None else {}
        if reuse is not None:
            self._paths.update(reuse.packs)
        self._fds: dict[str | None, int] = {}
        self._end = (reuse.end_tar_state, reuse.end_blob_state) if reuse is not None else (b"", b"")
        # While the groups are those of `reuse`, in the same places, nothing is hashed (`_tar` is None).
        self._prefix = reuse is not None and reuse.resumable and sha256state.available()
        self._tar: StateHash | None = None if self._prefix else StateHash()
        self._skippable = reuse is not None and reuse.skippable
        self._index = 0

    def _compress(self, data: bytes) -> bytes:
        # One compressor per worker thread, kept: its buffers are allocated once, not per group.
        cctx: zstandard.ZstdCompressor | None = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = zstandard.ZstdCompressor(level=self._level, write_checksum=True, write_content_size=True)
            self._local.cctx = cctx
        return cctx.compress(data)

    def _old_frame(self, frame: Frame) -> bytes | None:
        if frame.pack not in self._fds:
            path = self._paths.get(frame.pack)
            try:
                self._fds[frame.pack] = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if path else -1
            except OSError:
                self._fds[frame.pack] = -1  # that blob is gone: compress again
        fd = self._fds[frame.pack]
        if fd < 0:
            return None
        data = os.pread(fd, frame.size, frame.offset)
        return data if len(data) == frame.size else None

    def _states_at(self, index: int) -> tuple[bytes, bytes]:
        """The old layer's tar and blob states where its group `index` starts (its end past the last)."""
        if index < len(self._old):
            return self._old[index].tar_state, self._old[index].blob_state
        return self._end

    def _cut(self, emit: Emit) -> None:
        if not self._group:
            return
        data = b"".join(self._group)
        self._group.clear()
        self._size = 0
        key = xxhash.xxh3_128_hexdigest(data)
        raw = len(data)
        index = self._index
        self._index += 1
        self.tar_size += raw
        resume: bytes | None = None
        if self._prefix:
            same = self._old[index] if index < len(self._old) else None
            if same is not None and same.key == key and same.raw == raw:
                # As it was: kept where it is (pack_only), or its old bytes written out again.
                old_bytes = None if self._pack_only else self._old_frame(same)
                if self._pack_only or old_bytes is not None:
                    self.reused += 1
                    self._pending.append((same, old_bytes, not self._pack_only, False, None))
                    self._drain(emit, _IN_FLIGHT)
                    return
            # The first group that differs: everything before it is the old layer's, so are the states.
            self._prefix = False
            tar_state, resume = self._states_at(index)
            self._tar = StateHash(tar_state)
        assert self._tar is not None
        tar_state = self._tar.state()
        self._tar.update(data)
        old = self._reuse.get(key)
        usable = old is not None and old.raw == raw and (old.pack is not None or not self._pack_only)
        blob = self._old_frame(old) if old is not None and usable else None
        if old is not None and blob is not None:
            self.reused += 1
            if self._pack_only:  # stays in its pack; hashed for the new blob's digest
                frame = Frame(key, raw, old.offset, old.size, old.pack, tar_state)
                self._pending.append((frame, blob, False, True, resume))
            else:
                self._pending.append((Frame(key, raw, 0, len(blob), None, tar_state), blob, True, True, resume))
        elif raw <= _INLINE_GROUP:  # compressed faster than handed to a worker and back
            self._pending.append((Frame(key, raw, 0, 0, None, tar_state), self._compress(data), True, True, resume))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="zstd")
            future = self._pool.submit(self._compress, data)
            self._pending.append((Frame(key, raw, 0, 0, None, tar_state), future, True, True, resume))
        self._drain(emit, _IN_FLIGHT)

    def _drain(self, emit: Emit, keep: int) -> None:
        while len(self._pending) > keep:
            frame, item, write, hashed, resume = self._pending.popleft()
            if item is None:
                emit(Out(frame, None, False, False))
                continue
            blob = item if isinstance(item, bytes) else item.result()
            if write:  # a frame of the output: its place there
                frame = Frame(frame.key, frame.raw, self._written, len(blob), None, frame.tar_state,
                              frame.blob_state if not hashed else b"")
                self._written += len(blob)
            emit(Out(frame, blob, write, hashed, resume))

    def feed(self, chunk: bytes, marks: Sequence[tuple[int, bytes]], emit: Emit) -> None:
        """Add `chunk`; `marks` are (offset in chunk, path) of the entries that start inside it."""
        start = 0
        for offset, path in marks:
            if offset > start:
                self._append(chunk[start:offset], emit)
                start = offset
            if ends_group(self._size, path):
                self._cut(emit)
        if start < len(chunk):
            self._append(chunk[start:], emit)

    def _append(self, piece: bytes, emit: Emit) -> None:
        """Add bytes to the group, cutting it exactly at HARD_GROUP (where writers that plan groups
        ahead, like mapped.py's, expect the cut whatever the chunks were)."""
        while piece:
            take = min(len(piece), HARD_GROUP - self._size)
            self._group.append(piece[:take] if take < len(piece) else piece)
            self._size += take
            piece = piece[take:]
            if self._size >= HARD_GROUP:
                self._cut(emit)

    @property
    def can_skip(self) -> bool:
        return self._prefix and self._pack_only and self._skippable

    def skip(self, frame: Frame, emit: Emit) -> None:
        """Take the old layer's next frame as it is, unread and unhashed (its writer knows by the meta
        key that the group is unchanged); only before the first byte of the stream arrives."""
        if not self.can_skip or self._group or self._tar is not None:
            raise LayerbuildError("a frame can only be skipped at the start of a layer that reuses one")
        if self._index >= len(self._old) or self._old[self._index] != frame:
            raise LayerbuildError("a skipped frame must be the old layer's frame in the same place")
        self._index += 1
        self.tar_size += frame.raw
        self.reused += 1
        self._pending.append((frame, None, False, False, None))
        self._drain(emit, _IN_FLIGHT)

    def finish(self, emit: Emit) -> tuple[str, bytes, bytes | None]:
        """Flush the last frames; the diff_id, the tar's end state, and (when the whole layer was the
        old one's prefix) the blob state to finish the blob digest from."""
        self._cut(emit)
        self._drain(emit, 0)
        self.close()
        if self._tar is None:  # every group was the old layer's, in place
            tar_state, blob_state = self._states_at(self._index)
            tar = StateHash(tar_state)
            return "sha256:" + tar.hexdigest(), tar_state, blob_state
        return "sha256:" + self._tar.hexdigest(), self._tar.state(), None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
