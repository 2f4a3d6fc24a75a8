"""What goes into a layer: a directory tree, a change set, or an overlay upper dir, as entries in canonical order.

Canonical order is a depth-first walk with each directory's children sorted by the bytes of their names,
so a parent always precedes its children and the result does not depend on the order the filesystem lists
them. Inside a directory the opaque marker comes first, then whiteouts, then the other entries: the OCI
layer spec asks for whiteouts before their siblings, so that even a naive extractor deletes before it adds.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.layer.tarformat import Header, Kind, kind_of_mode

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"

# Overlay's own bookkeeping and the host's security labels say nothing about the image's content, and
# would make the same tree give different layers on different hosts.
_DROPPED_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.", b"security.selinux")
_OPAQUE_XATTRS = (b"trusted.overlay.opaque", b"user.overlay.opaque")
# An upper dir using these can only be read together with its lower dirs, which a layer does not have.
_UNSUPPORTED_OVERLAY_XATTRS = (
    b"trusted.overlay.redirect",
    b"user.overlay.redirect",
    b"trusted.overlay.metacopy",
    b"user.overlay.metacopy",
)


@dataclass(frozen=True)
class Item:
    """One archive entry, plus where its content comes from (regular files only)."""

    header: Header
    source: bytes | None = None


@dataclass(frozen=True)
class ChangeSet:
    """Paths (relative to the tree root, '/'-separated) that a layer adds, deletes or makes opaque.

    `changed` names entries to take from the tree: each path stands for that one entry, not its
    subtree, and its parent directories are included automatically. `deleted` become whiteouts,
    `opaque` directories hide everything below them in lower layers.
    """

    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    opaque: tuple[str, ...] = field(default=())


def _whiteout(parent: bytes, name: bytes) -> Item:
    # Fixed metadata: a whiteout's only meaning is its name.
    return Item(Header(path=_join(parent, WHITEOUT_PREFIX + name), kind=Kind.FILE, mode=0o644))


def _join(parent: bytes, name: bytes) -> bytes:
    return parent + b"/" + name if parent else name


def read_xattrs(path: bytes) -> dict[bytes, bytes]:
    """All xattrs of `path` (not following a symlink); empty where the filesystem has none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out: dict[bytes, bytes] = {}
    for name in names:
        try:
            out[os.fsencode(name)] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed between list and get
                raise
    return out


class _Describer:
    """Turns lstat results into entries, remembering inodes so later links become tar hardlinks."""

    def __init__(self, source_date_epoch: int | None) -> None:
        self._sde = source_date_epoch
        self._inodes: dict[tuple[int, int], bytes] = {}

    def item(self, abspath: bytes, rel: bytes, st: os.stat_result, xattrs: dict[bytes, bytes]) -> Item | None:
        """The entry for one path; None for a socket, which tar cannot hold (skipped, as Docker does)."""
        kind = kind_of_mode(st.st_mode)
        if kind is None:
            return None
        mtime = st.st_mtime_ns // 1_000_000_000
        if self._sde is not None and mtime > self._sde:
            mtime = self._sde
        kept = tuple(sorted((k, v) for k, v in xattrs.items() if not k.startswith(_DROPPED_XATTR_PREFIXES)))
        base = Header(
            path=rel,
            kind=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=mtime,
            xattrs=kept,
        )
        if kind is not Kind.DIR and st.st_nlink > 1:
            first = self._inodes.setdefault((st.st_dev, st.st_ino), rel)
            if first != rel:
                return Item(replace(base, kind=Kind.HARDLINK, linkname=first, xattrs=()))
        if kind is Kind.FILE:
            return Item(replace(base, size=st.st_size), abspath)
        if kind is Kind.SYMLINK:
            return Item(replace(base, linkname=os.readlink(abspath)))
        if kind in (Kind.CHAR, Kind.BLOCK):
            return Item(replace(base, devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev)))
        return Item(base)


def _check_name(rel: bytes) -> None:
    if rel.rsplit(b"/", 1)[-1].startswith(WHITEOUT_PREFIX):
        raise LayerbuildError(
            f"cannot put {os.fsdecode(rel)!r} in a layer: names starting with .wh. mean deletions in OCI layers"
        )


def tree_items(
    root: str | os.PathLike[str], *, overlay: bool, source_date_epoch: int | None
) -> Iterator[Item]:
    """Every entry below `root` (not root itself), in canonical order.

    With `overlay`, `root` is an overlayfs upper dir: 0/0 character devices become whiteouts and
    directories marked opaque get an opaque marker.
    """
    describer = _Describer(source_date_epoch)
    base = os.fsencode(os.fspath(root))
    yield from _walk_dir(base, b"", describer, overlay)


def _walk_dir(absdir: bytes, rel: bytes, describer: _Describer, overlay: bool) -> Iterator[Item]:
    with os.scandir(absdir) as it:
        children = sorted((e.name, e.path) for e in it)
    whiteouts: list[Item] = []
    rest: list[tuple[bytes, bytes, os.stat_result]] = []
    for name, path in children:
        st = os.lstat(path)
        if overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            whiteouts.append(_whiteout(rel, name))
            continue
        _check_name(_join(rel, name))
        rest.append((name, path, st))
    yield from whiteouts
    for name, path, st in rest:
        crel = _join(rel, name)
        xattrs = read_xattrs(path)
        opaque = False
        if overlay:
            _check_overlay_xattrs(crel, xattrs)
            opaque = stat.S_ISDIR(st.st_mode) and any(xattrs.get(k) == b"y" for k in _OPAQUE_XATTRS)
        item = describer.item(path, crel, st, xattrs)
        if item is not None:
            yield item
        if stat.S_ISDIR(st.st_mode):
            if opaque:
                yield Item(Header(path=_join(crel, OPAQUE_MARKER), kind=Kind.FILE, mode=0o644))
            yield from _walk_dir(path, crel, describer, overlay)


def _check_overlay_xattrs(rel: bytes, xattrs: dict[bytes, bytes]) -> None:
    for key in _UNSUPPORTED_OVERLAY_XATTRS:
        if key in xattrs:
            raise LayerbuildError(
                f"overlay upper entry {os.fsdecode(rel)!r} has {key.decode()}: cannot turn it into a layer",
                hint="mount the overlay with redirect_dir=off,metacopy=off",
            )


class _Node:
    __slots__ = ("children", "opaque", "required", "whiteout")

    def __init__(self) -> None:
        self.children: dict[bytes, _Node] = {}
        self.required = False
        self.whiteout = False
        self.opaque = False


def _split(path: str) -> list[bytes]:
    parts = [p for p in os.fsencode(path).split(b"/") if p not in (b"", b".")]
    if not parts or b".." in parts:
        raise UsageError(f"change set path {path!r} must name an entry below the root")
    return parts


def _build(changes: ChangeSet) -> _Node:
    top = _Node()

    def node_for(path: str) -> _Node:
        node = top
        for part in _split(path):
            node = node.children.setdefault(part, _Node())
        return node

    for path in changes.changed:
        node_for(path).required = True
    for path in changes.deleted:
        node_for(path).whiteout = True
    for path in changes.opaque:
        node = node_for(path)
        node.opaque = node.required = True
    _drop_covered(top, covered=False)
    return top


def _drop_covered(node: _Node, covered: bool) -> bool:
    """Clear whiteouts below a deleted path (its whiteout already hides them); False if nothing is left."""
    for name, child in list(node.children.items()):
        if covered:
            child.whiteout = False
        if not _drop_covered(child, covered or child.whiteout):
            del node.children[name]
    return node.required or node.whiteout or node.opaque or bool(node.children)


def change_items(
    root: str | os.PathLike[str], changes: ChangeSet, *, source_date_epoch: int | None
) -> Iterator[Item]:
    """The entries of a change set against the tree at `root`, in canonical order."""
    describer = _Describer(source_date_epoch)
    yield from _walk_changes(os.fsencode(os.fspath(root)), b"", _build(changes), describer)


def _walk_changes(absdir: bytes, rel: bytes, node: _Node, describer: _Describer) -> Iterator[Item]:
    if node.opaque:
        yield Item(Header(path=_join(rel, OPAQUE_MARKER), kind=Kind.FILE, mode=0o644))
    names = sorted(node.children)
    for name in names:
        if node.children[name].whiteout:
            yield _whiteout(rel, name)
    for name in names:
        child = node.children[name]
        if child.whiteout and not child.required and not child.children:
            continue
        crel, cabs = _join(rel, name), absdir + b"/" + name
        try:
            st = os.lstat(cabs)
        except FileNotFoundError:
            if child.whiteout and not child.required:
                continue  # changes below a deleted directory are covered by its whiteout
            raise UsageError(f"changed path {os.fsdecode(crel)!r} does not exist in the tree") from None
        _check_name(crel)
        if child.children and not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"change set has paths below {os.fsdecode(crel)!r}, which is not a directory")
        item = describer.item(cabs, crel, st, read_xattrs(cabs))
        if item is not None:
            yield item
        if child.children or child.opaque:
            yield from _walk_changes(cabs, crel, child, describer)
