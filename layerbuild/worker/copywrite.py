"""Turn a CopySelection into its layer, streaming source files straight into the tar (no staging copy).

Placement follows BuildKit's copy: a directory source fills the destination directory; a file goes to
`dest/<name>` when the destination is a directory (by spelling, by having several sources, or because
it exists as one in the image), else to `dest` itself. Missing parents are created as 0755 directories
owned by the --chown user; directories that already exist in the image are emitted with the mode, owner
and mtime they have below (as BuildKit's layer diff carries them), so the layer's implicit parents never
mask them once unpacked. Files of the selection that are hard links of each other (same st_dev and
st_ino, st_nlink > 1) stay links: the first in layer order is written, the others as tar hard links to it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from layerbuild.context.tree import Entry, SourceTree, StageTree
from layerbuild.errors import BuildError
from layerbuild.layer import Compression, Kind, LayerInfo, MappedEntry, write_mapped
from layerbuild.layer.frames import Reuse
from layerbuild.layer.mapped import canonical_order
from layerbuild.layer.tarformat import kind_of_mode
from layerbuild.store.layout import system_scratch
from layerbuild.worker.copyowner import NO_USERS, UserDB, resolve_chown
from layerbuild.worker.fetch import unpack_archive
from layerbuild.worker.selection import CopySelection, CopySource

Existing = Callable[[str], bool]  # absolute image path -> is it an existing directory (symlinks followed)
# absolute image path -> (mode, uid, gid, mtime) of the real directory there below, None if it is no
# directory or is reached through a symlink (a layer entry there would replace the link)
Below = Callable[[str], "tuple[int, int, int, int] | None"]


def no_existing(_path: str) -> bool:
    return False


def no_below(_path: str) -> tuple[int, int, int, int] | None:
    return None


def rootfs_parents(root: str | os.PathLike[str]) -> Below:
    """A `below` callback over a materialized rootfs: the metadata of its real directories (owners
    as the stage tree reads them, so a rootless view's recorded owners count)."""
    tree = StageTree(root)
    base = os.fspath(root)

    def meta(path: str) -> tuple[int, int, int, int] | None:
        here = base
        st = None
        for part in [p for p in path.split("/") if p]:
            here = here + "/" + part
            try:
                st = os.lstat(here)
            except OSError:
                return None
            if not stat.S_ISDIR(st.st_mode):
                return None
        if st is None:
            return None
        uid, gid = tree.owner(Entry(path.strip("/"), here, st)) or (0, 0)
        return stat.S_IMODE(st.st_mode), uid, gid, st.st_mtime_ns // 1_000_000_000

    return meta


def rootfs_dirs(root: str | os.PathLike[str]) -> Existing:
    """An `existing` callback over a materialized rootfs: directories found by resolving inside it."""
    tree = StageTree(root)

    def is_dir(path: str) -> bool:
        try:
            entry = tree.resolve(path.lstrip("/"))
        except BuildError:
            return False
        return entry is not None and entry.is_dir

    return is_dir


class _Layout:
    """The layer being assembled: layer path -> entry, with parent directories made on demand."""

    def __init__(
        self, sel: CopySelection, owner: tuple[int, int] | None, existing: Existing, sde: int | None,
        below: Below = no_below,
    ) -> None:
        self.sel = sel
        self.owner = owner
        self.existing = existing
        self.below = below
        self.fixed_time = sde or 0
        self.entries: dict[str, MappedEntry] = {}
        # layer path -> (source number, inode) of a file with several links: links are kept within one
        # source, as BuildKit's copy of each source tracks them
        self.linked: dict[str, tuple[int, int, int]] = {}
        self.source_number = 0

    def dir_exists(self, path: str) -> bool:
        known = self.entries.get(path)
        if known is not None:
            return known.kind is Kind.DIR
        return self.existing("/" + path)

    def synthesized_dir(self, path: str) -> MappedEntry:
        uid, gid = self.owner or (0, 0)
        return MappedEntry(path, Kind.DIR, mode=0o755, uid=uid, gid=gid, mtime=self.fixed_time)

    def ensure_parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            known = self.entries.get(parent)
            if known is not None:
                if known.kind is not Kind.DIR:
                    raise BuildError(f"cannot copy to /{path}: /{parent} is not a directory")
                continue
            if not self.existing("/" + parent):
                self.entries[parent] = self.synthesized_dir(parent)
            else:
                self.keep_existing(parent)

    def keep_existing(self, path: str) -> None:
        """Carry the directory `path` that exists below with its own metadata (not the --chown owner)."""
        meta = self.below("/" + path)
        if meta is not None and path not in self.entries:
            mode, uid, gid, mtime = meta
            self.entries[path] = MappedEntry(path, Kind.DIR, mode=mode, uid=uid, gid=gid, mtime=mtime)

    def put(self, entry: MappedEntry) -> None:
        old = self.entries.get(entry.path)
        if old is not None and old.kind is Kind.DIR and entry.kind is Kind.DIR:
            return  # a directory merges with a directory: the first one's metadata stays
        if old is not None and old.kind is Kind.DIR:
            prefix = entry.path + "/"
            for key in [k for k in self.entries if k.startswith(prefix)]:
                del self.entries[key]
        self.entries[entry.path] = entry

    def mapped(self, path: str, entry: Entry, tree: SourceTree) -> MappedEntry:
        st = entry.st
        kind = kind_of_mode(st.st_mode)
        if kind is None:
            raise BuildError(f"cannot copy {entry.rel!r}: sockets cannot go into a layer")
        if self.owner is not None:
            uid, gid = self.owner
        elif (kept := tree.owner(entry)) is not None:
            uid, gid = kept
        else:
            uid, gid = 0, 0
        mode = stat.S_IMODE(st.st_mode)
        if self.sel.chmod is not None and kind is not Kind.SYMLINK:
            mode = self.sel.chmod(mode, kind is Kind.DIR)
        mtime = st.st_mtime_ns // 1_000_000_000
        if kind is Kind.FILE:
            if st.st_nlink > 1:
                self.linked[path] = (self.source_number, st.st_dev, st.st_ino)
            cap = tree.capability(entry)
            return MappedEntry(
                path,
                kind,
                mode=mode,
                uid=uid,
                gid=gid,
                mtime=mtime,
                size=st.st_size,
                source=entry.path,
                identity=(st.st_dev, st.st_ino),
                xattrs=((b"security.capability", cap),) if cap else (),
                # The fingerprint the step's cache key took (content, mode, size, path): a rebuild
                # skips the unchanged groups of the previous layer by it, unread.
                content_key=tree.taken_fingerprint(entry),
            )
        if kind is Kind.SYMLINK:
            return MappedEntry(path, kind, uid=uid, gid=gid, mtime=mtime, linkname=os.readlink(entry.path))
        if kind in (Kind.CHAR, Kind.BLOCK):
            return MappedEntry(
                path,
                kind,
                mode=mode,
                uid=uid,
                gid=gid,
                mtime=mtime,
                devmajor=os.major(st.st_rdev),
                devminor=os.minor(st.st_rdev),
            )
        return MappedEntry(path, kind, mode=mode, uid=uid, gid=gid, mtime=mtime)

    def final_entries(self) -> list[MappedEntry]:
        """The entries, with every file after the first (in layer order) of an inode as a hard link."""
        groups: dict[tuple[int, int, int], list[str]] = {}
        for path, inode in self.linked.items():
            got = self.entries.get(path)
            if got is not None and got.kind is Kind.FILE and got.identity == inode[1:] and got.source is not None:
                groups.setdefault(inode, []).append(path)
        out = dict(self.entries)
        for paths in groups.values():
            paths.sort(key=canonical_order)
            for path in paths[1:]:
                e = out[path]
                out[path] = MappedEntry(
                    path, Kind.HARDLINK, mode=e.mode, uid=e.uid, gid=e.gid, mtime=e.mtime, linkname=paths[0]
                )
        return list(out.values())

    def file_target(self, name: str) -> str:
        dest = self.sel.dest.lstrip("/")
        if self.sel.dest_is_dir or (dest and self.dir_exists(dest)) or not dest:
            return f"{dest}/{name}" if dest else name
        return dest

    def dir_target(self, root: Entry | None, tree: SourceTree | None, *, from_source: bool) -> str:
        dest = self.sel.dest.lstrip("/")
        if dest and not self.dir_exists(dest):
            self.ensure_parents(dest)
            if from_source and not self.sel.dest_is_dir and root is not None and tree is not None:
                self.put(
                    self.mapped(dest, root, tree)
                )  # created by the copy: takes the source dir's metadata
            else:
                self.put(self.synthesized_dir(dest))
        elif dest:
            self.ensure_parents(dest)
            self.keep_existing(dest)
        return dest

    def add_members(self, target: str, members: list[tuple[str, Entry]], tree: SourceTree) -> None:
        for rel, entry in members:
            path = f"{target}/{rel}" if target else rel
            self.put(self.mapped(path, entry, tree))

    def add_source(self, src: CopySource, tmp: Callable[[], Path]) -> None:
        tree = self.sel.tree
        if src.kind == "contents":
            assert tree is not None
            target = self.dir_target(src.root, tree, from_source=True)
            self.add_members(target, list(src.members), tree)
        elif src.kind == "archive":
            assert src.root is not None and src.archive is not None
            target = self.dir_target(None, None, from_source=False)
            where = Path(tempfile.mkdtemp(prefix="unpack-", dir=tmp()))
            unpack_archive(src.root.path, src.archive, where)
            unpacked = StageTree(where)  # rootless, the archive's owners are recorded on the files
            members = list(unpacked.walk(""))
            self.add_members(target, [(e.rel, e) for e in members], unpacked)
        elif src.kind == "single":
            assert tree is not None and src.root is not None
            path = self.file_target(src.name)
            self.ensure_parents(path)
            self.put(self.mapped(path, src.root, tree))
        elif src.kind == "heredoc":
            assert src.data is not None
            path = self.file_target(src.name)
            self.ensure_parents(path)
            self.put(self._generated(path, 0o644, src.data, None, self.fixed_time))
        elif src.kind == "url":
            assert src.url is not None
            got = self.sel.fetch(src.url)
            path = self.file_target(src.name)
            self.ensure_parents(path)
            size = got.path.stat().st_size
            self.put(self._generated(path, 0o600, None, (str(got.path), size), got.last_modified or 0))

    def _generated(
        self, path: str, mode: int, data: bytes | None, source: tuple[str, int] | None, mtime: int
    ) -> MappedEntry:
        uid, gid = self.owner or (0, 0)
        if self.sel.chmod is not None:
            mode = self.sel.chmod(mode, False)
        if source is not None:
            return MappedEntry(
                path, Kind.FILE, mode=mode, uid=uid, gid=gid, mtime=mtime, source=source[0], size=source[1]
            )
        return MappedEntry(path, Kind.FILE, mode=mode, uid=uid, gid=gid, mtime=mtime, data=data)


def write_copy_layer(
    sel: CopySelection,
    out: BinaryIO,
    *,
    user_db: UserDB = NO_USERS,
    existing: Existing = no_existing,
    below: Below = no_below,
    source_date_epoch: int | None = None,
    compression: Compression = Compression.ZSTD,
    reuse: Reuse | None = None,
    pack_only: bool = False,
) -> LayerInfo:
    """Write the layer of `sel` into `out` (the caller opens and closes it).

    `reuse` offers the frames of this step's previous layer, so an edit costs the changed files
    (see layer.frames); the bytes written are the same as without it. With `pack_only` only the new
    frames are written (see write_mapped).

    `existing` says which directories the image below already has and `below` their metadata (both
    ignored with --link, whose layer must not depend on them); `user_db` resolves --chown names. Source mtimes are kept (clamped to
    `source_date_epoch`); created directories and heredoc files get `source_date_epoch` or 0."""
    owner = resolve_chown(sel.chown, user_db) if sel.chown is not None else None
    layout = _Layout(
        sel, owner, no_existing if sel.link else existing, source_date_epoch, no_below if sel.link else below
    )
    scratch: list[Path] = []

    def tmp() -> Path:
        if not scratch:
            scratch.append(system_scratch("layerbuild-unpack-"))
        return scratch[0]

    try:
        for number, src in enumerate(sel.sources):
            layout.source_number = number
            layout.add_source(src, tmp)
        return write_mapped(
            layout.final_entries(), out, compression=compression, source_date_epoch=source_date_epoch,
            reuse=reuse, pack_only=pack_only,
        )
    finally:
        for path in scratch:
            shutil.rmtree(path, ignore_errors=True)
