"""Write deterministic layers: a tree, a change set or an overlay upper dir → tar → compressed blob, in one pass."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO

from layerbuild.errors import LayerbuildError
from layerbuild.layer.sink import Compression, LayerInfo, LayerSink, drive
from layerbuild.layer.sources import ChangeSet, Item, change_items, tree_items
from layerbuild.layer.tarformat import END_OF_ARCHIVE, encode_header, padding

# Chunks handed to the sink: big enough that per-chunk costs vanish, small enough to bound memory.
_CHUNK = 1 << 20


def _stream_items(items: Iterable[Item], sink: LayerSink) -> None:
    buf = bytearray()  # headers and small files are batched; large file chunks go to the sink as they are
    marks: list[tuple[int, bytes]] = []  # where entries start in buf: the sink cuts frames there

    def flush() -> None:
        if buf:
            sink.write(bytes(buf), marks)
            buf.clear()
            marks.clear()

    for item in items:
        marks.append((len(buf), item.header.path))
        buf += encode_header(item.header)
        size = item.header.size
        if item.source is not None and size:
            fd = os.open(item.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                remaining = size
                while remaining:
                    data = os.read(fd, min(remaining, _CHUNK))
                    if not data:
                        raise LayerbuildError(
                            f"{os.fsdecode(item.header.path)!r} shrank while being written into a layer"
                        )
                    remaining -= len(data)
                    if len(buf) + len(data) <= _CHUNK:
                        buf += data
                    else:
                        flush()
                        sink.write(data)
            finally:
                os.close(fd)
            buf += b"\0" * padding(size)
        if len(buf) >= _CHUNK:
            flush()
    buf += END_OF_ARCHIVE
    flush()


def _write(
    items: Iterable[Item], out: BinaryIO, compression: Compression, level: int | None, threads: int
) -> LayerInfo:
    return drive(LayerSink(out, compression, level=level, threads=threads), lambda sink: _stream_items(items, sink))


def write_layer(
    root: str | os.PathLike[str],
    out: BinaryIO,
    *,
    compression: Compression = Compression.ZSTD,
    source_date_epoch: int | None = None,
    level: int | None = None,
    threads: int = -1,
) -> LayerInfo:
    """Write every entry below `root` as a layer blob into `out` (which the caller opens and closes).

    The tar is the same bytes for the same tree whatever the listing order, atimes or ctimes; mtimes
    are kept, or clamped to `source_date_epoch` when given. `threads` is zstd's worker count (-1: one
    per CPU); `level` defaults to 3 for zstd and 6 for gzip.
    """
    items = tree_items(root, overlay=False, source_date_epoch=source_date_epoch)
    return _write(items, out, compression, level, threads)


def write_changes(
    root: str | os.PathLike[str],
    changes: ChangeSet,
    out: BinaryIO,
    *,
    compression: Compression = Compression.ZSTD,
    source_date_epoch: int | None = None,
    level: int | None = None,
    threads: int = -1,
) -> LayerInfo:
    """Write a layer of the entries `changes` names in the tree at `root`, plus whiteouts for deletions."""
    items = change_items(root, changes, source_date_epoch=source_date_epoch)
    return _write(items, out, compression, level, threads)


def write_overlay_upper(
    upper: str | os.PathLike[str],
    out: BinaryIO,
    *,
    compression: Compression = Compression.ZSTD,
    source_date_epoch: int | None = None,
    level: int | None = None,
    threads: int = -1,
) -> LayerInfo:
    """Write an overlayfs upper dir as a layer: 0/0 char devices → `.wh.<name>`, opaque dirs → `.wh..wh..opq`."""
    items = tree_items(upper, overlay=True, source_date_epoch=source_date_epoch)
    return _write(items, out, compression, level, threads)
