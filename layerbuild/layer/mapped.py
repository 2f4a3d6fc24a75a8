"""Write a layer from mapped entries: each names its path in the layer and where its bytes come from.

This is how COPY makes a layer without staging files: entries point at source files anywhere (or carry
their content inline), with the metadata the layer should record. Entries are written in canonical
order (depth first, names in byte order), so the same entries give the same bytes whatever order they
are given in. Parents that are not listed are not synthesized here: the caller decides which directories
a layer must carry and which already exist below it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import xxhash
import zstandard

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.layer.frames import HARD_GROUP, Reuse, ends_group
from layerbuild.layer.sink import Compression, LayerInfo, LayerSink, drive
from layerbuild.layer.sources import WHITEOUT_PREFIX
from layerbuild.layer.tarformat import END_OF_ARCHIVE, Kind, encode_entry, padding

_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class MappedEntry:
    """One entry of a mapped layer.

    `path` is relative to the layer root ('/'-separated, no `.`/`..`). A regular file takes its content
    from `data` when given, else from the file `source` (read without following a final symlink),
    whose `size` bytes are written; `identity` (st_dev, st_ino), when given, must match the opened
    file, so a source swapped since it was hashed is refused rather than silently written. A hard link
    (Kind.HARDLINK) names in `linkname` the layer path of a regular file entry that sorts before it.
    `content_key`, when given, stands for the source's content (it must change when the bytes do): a
    rebuild that reuses an earlier layer's frames skips the groups of files whose keys are unchanged
    without reading them.
    """

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    source: str | bytes | None = None
    data: bytes | None = None
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    identity: tuple[int, int] | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] = field(default=())
    content_key: str | None = None  # what the file's content hashes to (a context fingerprint), if known


def canonical_order(path: str) -> tuple[bytes, ...]:
    """The sort key that places `path` in a mapped layer (depth first, names in byte order)."""
    return tuple(p for p in os.fsencode(path).split(b"/") if p not in (b"", b"."))


def _components(path: str) -> tuple[bytes, ...]:
    parts = tuple(p for p in os.fsencode(path).split(b"/") if p not in (b"", b"."))
    if not parts or b".." in parts:
        raise UsageError(f"mapped layer path {path!r} must name an entry below the root, without '..'")
    if parts[-1].startswith(WHITEOUT_PREFIX):
        raise LayerbuildError(
            f"cannot put {path!r} in a layer: names starting with .wh. mean deletions in OCI layers"
        )
    return parts


def _encoded_header(entry: MappedEntry, path: bytes, sde: int | None) -> tuple[bytes, int]:
    """The header block(s) of `entry` at `path`, and the size of the content that follows it."""
    kind = entry.kind
    size = (len(entry.data) if entry.data is not None else entry.size) if kind is Kind.FILE else 0
    mtime = entry.mtime if sde is None or entry.mtime <= sde else sde
    mode = 0o777 if kind is Kind.SYMLINK else entry.mode & 0o7777
    linkname = os.fsencode(entry.linkname) if entry.linkname else b""
    xattrs = tuple(sorted(entry.xattrs)) if entry.xattrs else ()
    return encode_entry(path, kind, mode, entry.uid, entry.gid, size, mtime, linkname, entry.devmajor,
                        entry.devminor, xattrs), size


def _copy_file(entry: MappedEntry, size: int, offset: int, length: int, buf: bytearray,
               marks: list[tuple[int, bytes]], sink: LayerSink) -> None:
    """Bytes [offset, offset + length) of the source of `entry` (of `size` bytes) into the stream."""
    assert entry.source is not None
    fd = os.open(entry.source, _OPEN_FLAGS)
    try:
        if entry.identity is not None:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != entry.identity or st.st_size != size:
                raise LayerbuildError(
                    f"{entry.path!r}: its source file was replaced or changed while the layer was written"
                )
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        remaining = length
        while remaining:
            data = os.read(fd, min(remaining, _CHUNK))
            if not data:
                raise LayerbuildError(f"{entry.path!r}: its source file shrank while the layer was written")
            remaining -= len(data)
            if len(buf) + len(data) <= _CHUNK:
                buf += data
            else:
                sink.write(bytes(buf), marks)
                buf.clear()
                marks.clear()
                sink.write(data)
    finally:
        os.close(fd)


# What the producer puts in the stream: tar bytes (a header with its path, padding, inline content,
# the end blocks) or a range of a source file.
class _Bytes(NamedTuple):
    data: bytes
    path: bytes | None  # of the entry whose header starts `data`


class _Range(NamedTuple):
    entry: MappedEntry
    size: int  # the file's
    offset: int
    length: int


_Op = _Bytes | _Range


class _Plan:
    """The producer's view of the groups the framer will cut (frames.ends_group at entry starts, exact
    HARD_GROUP cuts), with each group's meta key: xxh3-128 over its tar bytes, except that file data
    counts by its content key and range, so the key is known without reading any file ("" when a file
    without a content key has bytes in the group). `done` lists (start, end, meta key)."""

    def __init__(self) -> None:
        self.pos = 0
        self.start = 0
        self.size = 0
        self._hash = xxhash.xxh3_128()
        self._keyed = True
        self.done: list[tuple[int, int, str]] = []

    def split(self, op: _Op) -> Iterator[tuple[_Op, bool]]:
        """`op` in pieces that each lie in one group, each with whether its group ends after it."""
        length = len(op.data) if isinstance(op, _Bytes) else op.length
        at = 0
        while at < length or (length == 0 and at == 0):
            take = min(length - at, HARD_GROUP - self.size)
            piece: _Op
            if isinstance(op, _Bytes):
                data = op.data if take == length else op.data[at:at + take]
                piece = _Bytes(data, op.path if at == 0 else None)
                self._hash.update(b"B%d:" % take)
                self._hash.update(data)
            else:
                piece = _Range(op.entry, op.size, op.offset + at, take)
                key = op.entry.content_key
                if key is None:
                    self._keyed = False
                else:
                    self._hash.update(b"F%d:%d:%s;" % (op.offset + at, take, key.encode()))
            self.size += take
            self.pos += take
            at += take
            full = self.size >= HARD_GROUP
            if full:
                self.close()
            yield piece, full
            if length == 0:
                break

    def fits(self, op: _Op) -> bool:
        """Whether `op` lies inside the current group without filling it (then `add` it whole)."""
        length = len(op.data) if isinstance(op, _Bytes) else op.length
        return length > 0 and self.size + length < HARD_GROUP

    def add(self, op: _Op) -> None:
        """`split` for an op that `fits`: the common case, without the generator."""
        if isinstance(op, _Bytes):
            length = len(op.data)
            self._hash.update(b"B%d:" % length)
            self._hash.update(op.data)
        else:
            length = op.length
            key = op.entry.content_key
            if key is None:
                self._keyed = False
            else:
                self._hash.update(b"F%d:%d:%s;" % (op.offset, length, key.encode()))
        self.size += length
        self.pos += length

    def close(self) -> bool:
        """End the current group (if it has bytes); whether there was one."""
        if self.size == 0:
            return False
        self.done.append((self.start, self.pos, self._hash.hexdigest() if self._keyed else ""))
        self.start, self.size = self.pos, 0
        self._hash = xxhash.xxh3_128()
        self._keyed = True
        return True


class _OldGroups:
    """The frames of a reused layer by their meta keys, read back uncompressed on demand."""

    def __init__(self, reuse: Reuse) -> None:
        self._frames = {f.mkey: f for f in reuse.frames if f.mkey}
        self._paths: dict[str | None, str] = {None: reuse.blob}
        self._paths.update(reuse.packs)
        self._fds: dict[str | None, int] = {}
        self._dctx = zstandard.ZstdDecompressor()

    def raw(self, mkey: str, length: int) -> bytes | None:
        """The tar bytes of the frame whose group had meta key `mkey` and `length` bytes; None when
        there is none, or it cannot be read back exactly (the group is then read from its files)."""
        frame = self._frames.get(mkey)
        if frame is None or frame.raw != length:
            return None
        fd = self._fds.get(frame.pack)
        if fd is None:
            path = self._paths.get(frame.pack)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if path else -1
            except OSError:
                fd = -1
            self._fds[frame.pack] = fd
        if fd < 0:
            return None
        try:
            data = os.pread(fd, frame.size, frame.offset)
            raw = self._dctx.decompress(data, max_output_size=length)
        except (OSError, zstandard.ZstdError):
            return None
        if len(raw) != length or xxhash.xxh3_128_hexdigest(raw) != frame.key:
            return None
        return raw

    def close(self) -> None:
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()


def write_mapped(
    entries: Iterable[MappedEntry],
    out: BinaryIO,
    *,
    compression: Compression = Compression.ZSTD,
    source_date_epoch: int | None = None,
    level: int | None = None,
    threads: int = -1,
    reuse: Reuse | None = None,
    pack_only: bool = False,
) -> LayerInfo:
    """Write `entries` as a layer blob into `out` (which the caller opens and closes).

    `reuse` offers an earlier layer's zstd frames: groups of entries whose bytes are unchanged are
    copied from it instead of compressed again (see frames.py); the result is the same either way.
    With `pack_only`, the frames taken from `reuse` are not written to `out` (the returned frames say
    where each lies: the store keeps such a layer as a recipe).

    A path given twice is an error. mtimes are clamped to `source_date_epoch` when given."""
    keyed: dict[tuple[bytes, ...], MappedEntry] = {}
    for entry in entries:
        parts = _components(entry.path)
        if parts in keyed:
            raise UsageError(f"mapped layer path {entry.path!r} is given twice")
        if entry.kind is Kind.FILE and entry.data is None and entry.source is None and entry.size:
            raise UsageError(f"mapped layer file {entry.path!r} has a size but no content")
        keyed[parts] = entry
    for parts, entry in keyed.items():
        if entry.kind is Kind.HARDLINK:
            target = keyed.get(canonical_order(entry.linkname))
            if target is None or target.kind is not Kind.FILE or canonical_order(entry.linkname) >= parts:
                raise UsageError(
                    f"mapped layer hard link {entry.path!r} must name a file written before it, "
                    f"not {entry.linkname!r}"
                )

    def produce(sink: LayerSink) -> None:
        buf = bytearray()
        marks: list[tuple[int, bytes]] = []  # where entries start in buf: the sink cuts frames there
        plan = _Plan()
        # While the groups are the reused layer's, unchanged by their meta keys, they are skipped
        # unread; the ops of the group being planned wait in `held` until its key is known.
        old = reuse.frames if reuse is not None and sink.can_skip else ()
        skipping = bool(old)
        # Past them, a group whose meta key a frame of the reused layer has is that frame's bytes:
        # they are decompressed from it instead of read from the group's files (and the framer
        # finds the compressed frame by its key, so nothing is compressed again either).
        known = _OldGroups(reuse) if reuse is not None else None
        held: list[_Op] = []

        def emit(op: _Op) -> None:
            if isinstance(op, _Bytes):
                if op.path is not None:
                    marks.append((len(buf), op.path))
                buf.extend(op.data)
            else:
                _copy_file(op.entry, op.size, op.offset, op.length, buf, marks, sink)
            if len(buf) >= _CHUNK:
                sink.write(bytes(buf), marks)
                buf.clear()
                marks.clear()

        def take(raw: bytes) -> None:
            """The held group's bytes are `raw`: into the stream, with its entries' marks."""
            starts: list[tuple[int, bytes]] = []
            at = 0
            for op in held:
                if isinstance(op, _Bytes):
                    if op.path is not None:
                        starts.append((at, op.path))
                    at += len(op.data)
                else:
                    at += op.length
            if buf:
                sink.write(bytes(buf), marks)
                buf.clear()
                marks.clear()
            for piece in range(0, len(raw), _CHUNK):  # in blocks, as the queue to the sink expects
                upto = piece + _CHUNK
                sink.write(raw[piece:upto], [(o - piece, p) for o, p in starts if piece <= o < upto])

        def group_ended() -> None:
            nonlocal skipping
            index = len(plan.done) - 1
            start, end, mkey = plan.done[index]
            if skipping:
                frame = old[index] if index < len(old) else None
                if frame is not None and mkey and frame.mkey == mkey and frame.raw == end - start:
                    sink.skip(frame)
                    held.clear()
                    return
                skipping = False
            raw = known.raw(mkey, end - start) if known is not None and mkey else None
            if raw is not None:
                take(raw)
            else:
                for op in held:
                    emit(op)
            held.clear()

        def put(op: _Op) -> None:
            hold = skipping or known is not None
            if plan.fits(op):
                plan.add(op)
                if hold:
                    held.append(op)
                else:
                    emit(op)
                return
            for piece, ended in plan.split(op):
                if hold:
                    held.append(piece)
                else:
                    emit(piece)
                if ended:
                    group_ended()

        try:
            for parts in sorted(keyed):
                entry = keyed[parts]
                path = b"/".join(parts)
                block, size = _encoded_header(entry, path, source_date_epoch)
                if ends_group(plan.size, path) and plan.close():
                    group_ended()
                put(_Bytes(block, path))
                if size:
                    if entry.data is not None:
                        put(_Bytes(entry.data, None))
                    else:
                        put(_Range(entry, size, 0, size))
                    pad = padding(size)
                    if pad:
                        put(_Bytes(b"\0" * pad, None))
            put(_Bytes(END_OF_ARCHIVE, None))
            if plan.close():
                group_ended()
        finally:
            if known is not None:
                known.close()
        if held:  # cannot happen: every op belongs to a group that ended
            for op in held:
                emit(op)
        sink.write(bytes(buf), marks)
        sink.set_groups(plan.done)

    return drive(LayerSink(out, compression, level=level, threads=threads, reuse=reuse, pack_only=pack_only), produce)
