"""Apply a layer onto a directory safely: whiteouts honoured, nothing written outside the destination.

Rules (what other runtimes do, made strict where they are loose):
- member names are relative to the destination: a leading `/` is stripped (as Docker does), `..` that
  climbs above the root is refused, and only a directory may stand for the root itself;
- parent directories are resolved inside the destination (see `rootfs`), the entry's own name is never
  followed: an existing file, symlink or directory there is replaced (directories merge with directories);
- hardlink targets are paths inside the destination, so `/etc/passwd` means `<dest>/etc/passwd`;
- `.wh.<name>` deletes `<name>` from lower layers and `.wh..wh..opq` empties its directory of lower
  content; neither touches entries of the same layer (an archive that is no layer, such as a build
  context, keeps them as the plain files they are: `whiteouts="keep"`);
- owners and device nodes are restored when privileged (root, or root of a rootless user namespace
  with subordinate ids), skipped otherwise unless `require_privileges`; overlayfs's own xattrs in an
  archive are never applied, since they steer overlayfs (nor layerbuild's owner record).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Literal

from layerbuild.errors import LayerbuildError, UnsafeArchiveError
from layerbuild.layer.reader import ChunkStream, iter_members
from layerbuild.layer.rootfs import Parts, RootFS, split_entry_path
from layerbuild.layer.sources import OPAQUE_MARKER, WHITEOUT_PREFIX
from layerbuild.layer.tarformat import Header, Kind
from layerbuild.store.idmap import OWNER_XATTR, in_initial_userns, unmapped

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IGNORED_XATTRS = (b"trusted.overlay.", b"user.overlay.", OWNER_XATTR.encode())  # the last is ours
_XATTR_SKIPPABLE = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES)
_DEVICE_MODES = {Kind.CHAR: stat.S_IFCHR, Kind.BLOCK: stat.S_IFBLK}


@dataclass(frozen=True)
class ApplyResult:
    """What applying a layer did: the diff_id of what was read, for the caller to verify."""

    diff_id: str
    entries: int
    uncompressed_size: int
    format: str  # "zstd", "gzip" or "tar"
    skipped: tuple[str, ...]  # entries not materialised for lack of privilege (device nodes)


class _Applier:
    def __init__(self, root: RootFS, privileged: bool, require: bool, overlay: bool, record: bool = False,
                 keep: bool = False) -> None:
        self.root = root
        self.keep = keep
        self.record = record
        self.privileged = privileged
        self.require = require
        self.overlay = overlay
        self.created: set[Parts] = set()  # entries of this layer (and their parents): whiteouts spare them
        self.dirs: list[tuple[Parts, int, int]] = []  # directory modes/mtimes, set once children are in
        self.skipped: list[str] = []
        self.trusted: bool | None = None  # whether trusted.* xattrs are ours to set (root of the host)

    # --- entry points -------------------------------------------------------------------------------

    def member(self, h: Header, stream: ChunkStream) -> None:
        parts = split_entry_path(h.path, h.path)
        if not parts:
            if h.kind is not Kind.DIR:
                raise UnsafeArchiveError(f"entry {_show(h.path)} would replace the destination root")
            self._chown(None, b".", h)  # the root directory itself: metadata only
            self.dirs.append(((), h.mode, h.mtime))
            return
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX) and not self.keep:
            self._whiteout(h.path, parts[:-1], name)
            return
        pfd = self.root.dir_fd(parts[:-1], create=True, entry=h.path)
        assert pfd is not None
        self._mark_created(parts)
        if h.kind is Kind.DIR:
            self._make_dir(pfd, name, parts, h)
        elif h.kind is Kind.FILE:
            self._make_file(pfd, name, h, stream)
        elif h.kind is Kind.HARDLINK:
            self._make_hardlink(pfd, name, h)
        elif h.kind is Kind.SYMLINK:
            self._retrying(pfd, name, lambda: os.symlink(h.linkname, name, dir_fd=pfd))
            self._chown(pfd, name, h)
            self._xattrs(f"/proc/self/fd/{pfd}/".encode() + name, h)
            os.utime(name, ns=(h.mtime * 10**9,) * 2, dir_fd=pfd, follow_symlinks=False)
        else:
            self._make_special(pfd, name, h)

    def finish(self) -> None:
        """Set directory modes and mtimes now that nothing more is created inside them."""
        for parts, mode, mtime in reversed(self.dirs):
            fd = self._open_dir(parts)
            if fd is None:
                continue  # replaced or deleted later in the layer
            try:
                os.chmod(fd, mode)
                os.utime(fd, ns=(mtime * 10**9,) * 2)
            finally:
                os.close(fd)

    # --- whiteouts ----------------------------------------------------------------------------------

    def _whiteout(self, path: bytes, dparts: Parts, name: bytes) -> None:
        if name == OPAQUE_MARKER:
            dfd = self.root.dir_fd(dparts, create=True, entry=path)
            assert dfd is not None
            self._mark_created(dparts)
            if self.overlay:
                os.setxattr(dfd, self._overlay_xattr(), b"y")
            else:
                self._prune(dfd, dparts)
            return
        if name.startswith(WHITEOUT_PREFIX * 2):
            return  # other AUFS metadata (.wh..wh.plnk etc.) means nothing outside AUFS
        target = name[len(WHITEOUT_PREFIX) :]
        if target in (b"", b".", b".."):
            raise UnsafeArchiveError(f"entry {_show(path)} is a whiteout of no valid name")
        if self.overlay:
            pfd = self.root.dir_fd(dparts, create=True, entry=path)
            assert pfd is not None
            self._mark_created((*dparts, target))
            self._retrying(pfd, target, lambda: os.mknod(target, stat.S_IFCHR | 0o600, 0, dir_fd=pfd))
            return
        if (*dparts, target) in self.created:
            return  # a whiteout hides lower layers only, never entries of its own layer
        pfd = self.root.dir_fd(dparts, create=False, entry=path)
        if pfd is not None:
            self._remove(pfd, target)

    def _prune(self, dfd: int, dparts: Parts) -> None:
        """Remove everything below the directory that this layer did not create."""
        for name in os.listdir(dfd):
            bname = os.fsencode(name)
            child = (*dparts, bname)
            if child not in self.created:
                self._remove(dfd, bname)
                continue
            st = os.stat(bname, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                cfd = os.open(bname, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                try:
                    self._prune(cfd, child)
                finally:
                    os.close(cfd)

    def _overlay_xattr(self) -> str:
        # Rootless overlayfs (userxattr) reads the user namespace; privileged overlayfs the trusted one.
        if self.trusted is None:
            self.trusted = self.privileged and in_initial_userns()
        return "trusted.overlay.opaque" if self.trusted else "user.overlay.opaque"

    # --- creating entries ---------------------------------------------------------------------------

    def _mark_created(self, parts: Parts) -> None:
        while parts and parts not in self.created:
            self.created.add(parts)
            parts = parts[:-1]

    def _remove(self, pfd: int, name: bytes) -> bool:
        """Delete whatever is at `name` (never following it); False if there was nothing."""
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        if stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.root.invalidate()
        return True

    def _retrying(self, pfd: int, name: bytes, make: Callable[[], None]) -> None:
        """Run `make`; if the name is taken (by a lower layer), remove that and run it once more."""
        try:
            make()
        except FileExistsError:
            self._remove(pfd, name)
            make()

    def _make_dir(self, pfd: int, name: bytes, parts: Parts, h: Header) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):  # a directory merges with a directory; anything else goes
                self._remove(pfd, name)
                os.mkdir(name, 0o700, dir_fd=pfd)
        self._chown(pfd, name, h)
        if h.xattrs:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._xattrs(fd, h)
            finally:
                os.close(fd)
        self.dirs.append((parts, h.mode, h.mtime))

    def _make_file(self, pfd: int, name: bytes, h: Header, stream: ChunkStream) -> None:
        try:
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, name)
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            for piece in stream.pieces(h.size, f"the content of {_show(h.path)}"):
                while piece:
                    written = os.write(fd, piece)
                    piece = piece[written:]
            self._chown(fd, None, h)
            os.chmod(fd, h.mode)  # after chown, which clears setuid/setgid
            self._xattrs(fd, h)
            os.utime(fd, ns=(h.mtime * 10**9,) * 2)
        finally:
            os.close(fd)

    def _make_hardlink(self, pfd: int, name: bytes, h: Header) -> None:
        tparts = split_entry_path(h.linkname, h.path)
        if not tparts:
            raise UnsafeArchiveError(f"hardlink {_show(h.path)} points at the destination root")
        tfd = self.root.dir_fd(tparts[:-1], create=False, entry=h.path)
        if tfd is None or tparts == split_entry_path(h.path, h.path):
            raise UnsafeArchiveError(
                f"hardlink {_show(h.path)}: target {_show(h.linkname)} is not in the destination"
            )
        try:
            self._retrying(
                pfd,
                name,
                lambda: os.link(tparts[-1], name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False),
            )
        except FileNotFoundError:
            raise UnsafeArchiveError(
                f"hardlink {_show(h.path)}: target {_show(h.linkname)} is not in the destination"
            ) from None
        except PermissionError:  # linking a directory
            raise UnsafeArchiveError(
                f"hardlink {_show(h.path)}: cannot link to {_show(h.linkname)}"
            ) from None

    def _make_special(self, pfd: int, name: bytes, h: Header) -> None:
        if h.kind is Kind.FIFO:
            self._retrying(pfd, name, lambda: os.mkfifo(name, 0o600, dir_fd=pfd))
        else:
            device = os.makedev(h.devmajor, h.devminor)
            try:
                self._retrying(
                    pfd, name, lambda: os.mknod(name, _DEVICE_MODES[h.kind] | 0o600, device, dir_fd=pfd)
                )
            except PermissionError:
                if self.require:
                    raise UnsafeArchiveError(
                        f"entry {_show(h.path)}: device nodes need privileges",
                        hint="run as root, or allow skipping device nodes",
                    ) from None
                self.skipped.append(os.fsdecode(h.path))
                return
        self._chown(pfd, name, h)
        os.chmod(name, h.mode, dir_fd=pfd)  # we just made it: it is no symlink
        os.utime(name, ns=(h.mtime * 10**9,) * 2, dir_fd=pfd, follow_symlinks=False)

    def _chown(self, fd: int | None, name: bytes | None, h: Header) -> None:
        if not self.privileged:
            if self.record:
                self._record_owner(fd, name, h)
            return
        try:
            if name is None:
                assert fd is not None
                os.chown(fd, h.uid, h.gid)
            elif fd is None:
                os.chown(self.root.root_fd, h.uid, h.gid)
            else:
                os.chown(name, h.uid, h.gid, dir_fd=fd, follow_symlinks=False)
        except PermissionError:
            if self.require:
                raise UnsafeArchiveError(f"entry {_show(h.path)}: cannot set owner {h.uid}:{h.gid}") from None
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # In a user namespace: the owner is not mapped (rootless without enough subordinate ids).
            raise unmapped(f"entry {_show(h.path)} of a layer", h.uid, h.gid) from None

    def _record_owner(self, fd: int | None, name: bytes | None, h: Header) -> None:
        value = b"%d:%d" % (h.uid, h.gid)
        try:
            if name is None:
                assert fd is not None
                os.setxattr(fd, OWNER_XATTR, value)
            elif fd is None:
                os.setxattr(self.root.root_fd, OWNER_XATTR, value)
            else:  # a symlink cannot carry a user xattr: its owner is lost, as before
                os.setxattr(f"/proc/self/fd/{fd}/".encode() + name, OWNER_XATTR, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _XATTR_SKIPPABLE:
                raise

    def _xattrs(self, target: int | bytes, h: Header) -> None:
        for key, value in h.xattrs:
            if key.startswith(_IGNORED_XATTRS):
                continue
            try:
                if isinstance(target, int):
                    os.setxattr(target, key, value)
                else:
                    os.setxattr(target, key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _XATTR_SKIPPABLE:
                    raise

    def _open_dir(self, parts: Parts) -> int | None:
        if not parts:
            return os.dup(self.root.root_fd)
        pfd = self.root.dir_fd(parts[:-1], create=False, entry=b"/".join(parts))
        if pfd is None:
            return None
        try:
            return os.open(parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        except OSError:
            return None


def _show(path: bytes) -> str:
    return repr(os.fsdecode(path))


def apply_layer(
    blob: BinaryIO,
    dest: str | os.PathLike[str],
    *,
    privileged: bool | None = None,
    require_privileges: bool = False,
    whiteouts: Literal["apply", "overlay", "keep"] = "apply",
    record_owners: bool = False,
    max_entries: int = 10_000_000,
    max_bytes: int = 1 << 42,
) -> ApplyResult:
    """Apply the layer in `blob` (zstd, gzip or plain tar, told apart by magic bytes) onto `dest`.

    `privileged` (default: running as root) restores owners and device nodes; otherwise they are
    skipped, or refused with `require_privileges`. `whiteouts="overlay"` writes whiteouts in overlayfs
    form (0/0 char devices, opaque xattrs) instead of applying them, for unpacking one layer into an
    empty dir used as an overlay lowerdir; `whiteouts="keep"` writes `.wh.` entries as the files they are
    (an archive that is not a layer). `record_owners`, when owners cannot be set, keeps each entry's
    in the `user.layerbuild.owner` xattr instead (a rootless build's view of a stage). Limits bound
    entry count and unpacked bytes (tar bombs).
    Raises UnsafeArchiveError, naming the entry, for anything that would escape `dest`; what was applied
    before the error stays. The caller owns `blob`.
    """
    if privileged is None:
        privileged = os.geteuid() == 0
    root = RootFS(dest)
    stream = ChunkStream(blob, max_bytes=max_bytes)
    try:
        applier = _Applier(root, privileged, require_privileges, whiteouts == "overlay", record_owners,
                           keep=whiteouts == "keep")
        entries = 0
        for header in iter_members(stream, max_entries=max_entries):
            try:
                applier.member(header, stream)
            except OSError as exc:
                raise LayerbuildError(
                    f"cannot apply entry {_show(header.path)} to {os.fspath(dest)!r}: {exc}"
                ) from exc
            entries += 1
        try:
            applier.finish()
        except OSError as exc:
            raise LayerbuildError(f"cannot set directory metadata in {os.fspath(dest)!r}: {exc}") from exc
        diff_id = stream.finish()
        return ApplyResult(diff_id, entries, stream.size, stream.format, tuple(applier.skipped))
    finally:
        stream.close()
        root.close()
