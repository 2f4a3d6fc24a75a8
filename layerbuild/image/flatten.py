"""An image's final filesystem as one deterministic tar, computed from its layers without unpacking them.

The layers are read in order into an in-memory tree of headers, with whiteouts and opaque markers
applied as `layer.apply_layer` applies them (a whiteout hides lower layers only, never entries of its
own layer); file content is spooled to one temp file. The tree is then written in canonical order
(depth first, names sorted by bytes), so the output depends only on the image. Because nothing is
extracted, owners, device nodes and xattrs come through exactly, privileged or not. Hardlinks are
tracked by identity: the first path of a linked file (in output order) carries the content and the
others link to it; a link whose target was replaced later keeps the content it had.

Paths are taken literally, as `crane export` does: an entry below a path that a lower layer made a
symlink stays below that name rather than being resolved through the link.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from layerbuild.errors import DigestMismatchError, LayerbuildError, UnsafeArchiveError
from layerbuild.image.protocol import Layer
from layerbuild.layer.reader import ChunkStream, iter_members
from layerbuild.layer.rootfs import split_entry_path
from layerbuild.layer.sources import OPAQUE_MARKER, WHITEOUT_PREFIX
from layerbuild.layer.tarformat import END_OF_ARCHIVE, Header, Kind, encode_header, padding
from layerbuild.store import Store

_CHUNK = 1 << 20
_IMPLICIT_DIR = Header(path=b"", kind=Kind.DIR, mode=0o755)
MAX_ENTRIES = 10_000_000
MAX_BYTES = 1 << 42

Parts = tuple[bytes, ...]


class _Inode:
    """What hardlinked paths share: the metadata and where the content sits in the spool."""

    __slots__ = ("header", "offset")

    def __init__(self, header: Header, offset: int) -> None:
        self.header = header
        self.offset = offset


class _Node:
    __slots__ = ("children", "inode")

    def __init__(self, inode: _Inode) -> None:
        self.inode = inode
        self.children: dict[bytes, _Node] = {}


@dataclass(frozen=True)
class TarExport:
    """What `write_flat_tar` wrote: the sha256 of the tar, its size in bytes and its entry count."""

    digest: str
    size: int
    entries: int


class _Tree:
    def __init__(self, spool: BinaryIO) -> None:
        self.root = _Node(_Inode(_IMPLICIT_DIR, -1))
        self.spool = spool
        self.spool_end = 0
        self.created: set[Parts] = set()  # paths (and parents) written by the layer being read

    def _lookup(self, parts: Parts) -> _Node | None:
        node: _Node | None = self.root
        for part in parts:
            node = node.children.get(part) if node is not None else None
        return node

    def _parent(self, parts: Parts) -> _Node:
        node = self.root
        for part in parts:
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = _Node(_Inode(_IMPLICIT_DIR, -1))
            node = child
        return node

    def _mark_created(self, parts: Parts) -> None:
        while parts and parts not in self.created:
            self.created.add(parts)
            parts = parts[:-1]

    def add(self, h: Header, stream: ChunkStream) -> None:
        parts = split_entry_path(h.path, h.path)
        if not parts:
            return  # the root directory's own entry: the output has none, like a layer
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX):
            self._whiteout(h.path, parts[:-1], name)
            return
        parent = self._parent(parts[:-1])
        self._mark_created(parts)
        old = parent.children.get(name)
        if h.kind is Kind.HARDLINK:
            target = self._lookup(split_entry_path(h.linkname, h.path))
            if target is None or target.inode.header.kind is Kind.DIR:
                raise UnsafeArchiveError(
                    f"hardlink {os.fsdecode(h.path)!r} points at {os.fsdecode(h.linkname)!r}, "
                    "which is not a file in the image"
                )
            parent.children[name] = _Node(target.inode)
            return
        offset = -1
        if h.kind is Kind.FILE:
            offset = self.spool_end
            for piece in stream.pieces(h.size, f"the content of {h.path!r}"):
                self.spool.write(piece)
            self.spool_end += h.size
        inode = _Inode(replace(h, path=b"", linkname=h.linkname if h.kind is Kind.SYMLINK else b""), offset)
        if h.kind is Kind.DIR and old is not None and old.inode.header.kind is Kind.DIR:
            old.inode = inode  # directories merge: new metadata, lower content stays
        else:
            parent.children[name] = _Node(inode)

    def _whiteout(self, path: bytes, dparts: Parts, name: bytes) -> None:
        parent = self._lookup(dparts)
        if name == OPAQUE_MARKER:
            self._prune(self._parent(dparts), dparts)
            self._mark_created(dparts)
            return
        if name.startswith(WHITEOUT_PREFIX * 2):
            return  # AUFS bookkeeping (.wh..wh.plnk, ...) means nothing here
        target = name[len(WHITEOUT_PREFIX) :]
        if target in (b"", b".", b".."):
            raise UnsafeArchiveError(f"entry {os.fsdecode(path)!r} is a whiteout of no valid name")
        if parent is not None and (*dparts, target) not in self.created:
            parent.children.pop(target, None)

    def _prune(self, node: _Node, dparts: Parts) -> None:
        """Drop everything below `node` that the current layer did not write."""
        for name, child in list(node.children.items()):
            parts = (*dparts, name)
            if parts not in self.created:
                del node.children[name]
            elif child.inode.header.kind is Kind.DIR:
                self._prune(child, parts)


def _read_layers(layers: Sequence[Layer], tree: _Tree) -> None:
    for layer in layers:
        tree.created = set()
        with layer.compressed() as blob:
            stream = ChunkStream(blob, max_bytes=MAX_BYTES)
            try:
                for header in iter_members(stream, max_entries=MAX_ENTRIES):
                    tree.add(header, stream)
                diff_id = stream.finish()
            finally:
                stream.close()
        if diff_id != layer.diff_id:
            raise DigestMismatchError(f"layer blob {layer.digest} unpacks to {diff_id}, not {layer.diff_id}")


def _walk(node: _Node, prefix: bytes) -> Iterator[tuple[bytes, _Node]]:
    for name in sorted(node.children):
        child = node.children[name]
        path = prefix + name
        yield path, child
        yield from _walk(child, path + b"/")


class _Out:
    """Writes to the destination while hashing and counting what was written."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)


def _emit(tree: _Tree, out: _Out) -> int:
    first_path: dict[int, bytes] = {}  # id(inode) → path that carries the content
    entries = 0
    for path, node in _walk(tree.root, b""):
        inode = node.inode
        entries += 1
        if inode.header.kind is not Kind.DIR and id(inode) in first_path:
            link = Header(
                path=path,
                kind=Kind.HARDLINK,
                mode=inode.header.mode,
                uid=inode.header.uid,
                gid=inode.header.gid,
                mtime=inode.header.mtime,
                linkname=first_path[id(inode)],
            )
            out.write(encode_header(link))
            continue
        first_path[id(inode)] = path
        out.write(encode_header(replace(inode.header, path=path)))
        size = inode.header.size if inode.header.kind is Kind.FILE else 0
        if size:
            tree.spool.seek(inode.offset)
        remaining = size
        while remaining:
            data = tree.spool.read(min(remaining, _CHUNK))
            if not data:
                raise LayerbuildError("the export spool file ended early")
            out.write(data)
            remaining -= len(data)
        out.write(b"\0" * padding(size))
    out.write(END_OF_ARCHIVE)
    return entries


def write_flat_tar(store: Store, layers: Sequence[Layer], out: BinaryIO) -> TarExport:
    """Write the filesystem that `layers` (base first, any implementation's) make as one uncompressed
    tar into `out`; file content is spooled under the store's temp directory."""
    with tempfile.TemporaryFile(dir=store.layout.tmp, prefix="export-") as spool:
        tree = _Tree(spool)
        _read_layers(layers, tree)
        spool.flush()
        sink = _Out(out)
        try:
            entries = _emit(tree, sink)
        except OSError as exc:
            raise LayerbuildError(f"cannot write the export tar: {exc}") from exc
    return TarExport("sha256:" + sink.hash.hexdigest(), sink.size, entries)
