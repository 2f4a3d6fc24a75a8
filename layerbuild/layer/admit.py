"""Admission checks for archives that arrive from outside (import, load, ADD of a local tar, pulls).

An archive is checked entry by entry while it streams in, so a hostile one is refused at the door,
naming the entry, instead of being stored and refused later when an image is used. The rules are the
safe extractor's (`apply`) plus Docker's for what it refuses on arrival, made strict:
- member names are relative: an absolute name or a `..` that climbs above the root is refused;
- only a directory may stand for the root itself;
- no entry is written through a symlink of the same archive (writers never make such archives; a
  crafted one uses them to climb out), while symlink targets themselves are left alone: they are
  resolved inside the root, where they are used;
- a hardlink names an earlier entry of the same archive (each layer is unpacked on its own);
- no entry may declare more content than the budget left (free disk space, or a caller's limit), so
  a lying header fails before anything is inflated;
- where the caller says so (`devices=False`: a build context), no device node.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from layerbuild.errors import UnsafeArchiveError
from layerbuild.layer.reader import ChunkStream, iter_members
from layerbuild.layer.rootfs import Parts, split_entry_path
from layerbuild.layer.tarformat import Header, Kind

MAX_ENTRIES = 10_000_000
_HINT = "the archive is damaged, truncated, or was made to escape its destination; nothing of it was kept"
_BOMB_HINT = ("at most {} bytes may be unpacked (what the disk has free): the archive is damaged or a "
              "decompression bomb")


class EntryCheck:
    """Checks the entries of one archive in order; raises UnsafeArchiveError naming the first bad one.

    `what` names the archive in messages ("layer 2 of img.tar"); `max_bytes` bounds the unpacked size;
    `devices=False` refuses character and block devices.
    """

    def __init__(self, what: str, *, max_bytes: int, devices: bool = True) -> None:
        self.what = what
        self.budget = max_bytes
        self.devices = devices
        self._linkable: set[Parts] = set()
        self._symlinks: set[Parts] = set()

    def _refuse(self, h: Header, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.what}: entry {_show(h.path)} {why}", hint=_HINT)

    def _parts(self, h: Header, path: bytes) -> Parts:
        try:
            return split_entry_path(path, h.path)
        except UnsafeArchiveError:
            raise self._refuse(h, f"points above the root with '..' ({_show(path)})") from None

    def check(self, h: Header) -> None:
        if h.path.startswith(b"/"):
            raise self._refuse(h, "has an absolute path")
        parts = self._parts(h, h.path)
        if not parts and h.kind is not Kind.DIR:
            raise self._refuse(h, "would replace the root directory")
        if not self.devices and h.kind in (Kind.CHAR, Kind.BLOCK):
            raise UnsafeArchiveError(f"{self.what}: entry {_show(h.path)} is a device node, which this "
                                     "archive may not hold", hint="leave device nodes out of the archive")
        if h.size > self.budget:
            raise UnsafeArchiveError(
                f"{self.what}: entry {_show(h.path)} declares {h.size} bytes, more than the {self.budget} "
                "bytes that may still be unpacked", hint="free disk space in the store, or the archive lies")
        self.budget -= h.size
        for end in range(1, len(parts)):
            if parts[:end] in self._symlinks:
                raise self._refuse(h, f"is written through {_show(b'/'.join(parts[:end]))}, a symlink of the "
                                      "same archive")
        if h.kind is Kind.HARDLINK:
            target = self._parts(h, h.linkname)
            if target not in self._linkable:
                raise self._refuse(h, f"is a hardlink to {_show(h.linkname)}, which is no earlier entry "
                                      "of the archive")
        self._symlinks.discard(parts)  # whatever comes next at this path replaces the symlink
        if h.kind is Kind.SYMLINK:
            self._symlinks.add(parts)
        if h.kind is Kind.DIR:
            self._linkable.discard(parts)  # a directory replaces a file of that name
        else:
            self._linkable.add(parts)


def check_stream(stream: ChunkStream, what: str, *, max_bytes: int, max_entries: int = MAX_ENTRIES,
                 devices: bool = True) -> str:
    """Check every entry of the tar in `stream` (see EntryCheck) and read it to its end; returns its
    diff_id, which covers the whole stream. Every error names `what`."""
    check = EntryCheck(what, max_bytes=max_bytes, devices=devices)
    try:
        for header in iter_members(stream, max_entries=max_entries):
            check.check(header)
        return stream.finish()
    except UnsafeArchiveError as exc:
        if exc.message.startswith(what):
            raise
        hint = _BOMB_HINT.format(max_bytes) if "larger than" in exc.message else _HINT
        raise UnsafeArchiveError(f"{what}: {exc.message}", hint=hint) from exc


def check_layer(src: BinaryIO, what: str = "the layer", *, max_bytes: int = 1 << 42,
                devices: bool = True) -> tuple[str, int]:
    """Check a layer stream (gzip, zstd or plain tar) without storing it: its (diff_id, unpacked size).

    The entry point for any code that receives a layer from outside and keeps it by other means."""
    stream = ChunkStream(src, max_bytes=max_bytes)
    try:
        return check_stream(stream, what, max_bytes=max_bytes, devices=devices), stream.size
    finally:
        stream.close()


def _show(path: bytes) -> str:
    return repr(os.fsdecode(path))
