"""The copy-based rootfs for hosts without overlayfs: merge the lower dirs into one tree, run, then
write what changed into an overlay-style upper dir (0/0 char-device whiteouts) by comparing stat data.

A baseline of every entry's (inode, type+mode, owner, size, mtime, ctime, rdev) is taken after the
copy; ctime changes on any write, chmod or chown even when a tool restores mtime, so comparing it is
enough to find every changed entry without hashing content.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from layerbuild.runtime.merged import _is_whiteout, _opaque

Baseline = dict[str, tuple[int, ...]]
_SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")


def _privileged() -> bool:
    return os.geteuid() == 0


def _copy_meta(src_st: os.stat_result, src: str, dest: str) -> None:
    if _privileged():
        os.lchown(dest, src_st.st_uid, src_st.st_gid)
    if not stat.S_ISLNK(src_st.st_mode):
        os.chmod(dest, stat.S_IMODE(src_st.st_mode))
        with contextlib.suppress(OSError):
            for name in os.listxattr(src, follow_symlinks=False):
                if not name.startswith(_SKIPPED_XATTRS):
                    os.setxattr(dest, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
    os.utime(dest, ns=(src_st.st_atime_ns, src_st.st_mtime_ns), follow_symlinks=False)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _copy_entry(src: str, dest: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> bool:
    """Copy one non-directory entry; False if it was skipped (a device node without privileges)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], dest)
            return True
        shutil.copyfile(src, dest, follow_symlinks=False)
        links[key] = dest
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dest)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dest)
    elif _privileged() or (stat.S_ISCHR(mode) and st.st_rdev == 0):
        os.mknod(dest, mode, st.st_rdev)
    else:
        return False
    _copy_meta(st, src, dest)
    return True


def merge_lowers(lowers: list[Path], dest: Path) -> None:
    """Apply overlay-form lower dirs (bottom first) onto the empty dir `dest`, whiteouts included."""
    for lower in lowers:
        _merge_dir(os.fspath(lower), os.fspath(dest), {})


def copy_up(lowers: list[Path], target: str, dest: Path) -> bool:
    """Fill the empty directory `dest` with what the image (its overlay-form lower dirs, bottom first)
    has at `target`, owners, modes and times kept, as docker fills a new volume from the image at its
    mount point; the directory's own mode and owner too. False if the image has no directory there."""
    from layerbuild.runtime.merged import MergedView

    view = MergedView(lowers)
    parts, _ = view.resolve(target)
    layers = view.layers_at(parts)
    if not layers:
        return False
    links: dict[tuple[int, int], str] = {}
    for layer in reversed(layers):
        _merge_dir(layer, os.fspath(dest), links)
    top = layers[0]
    _copy_meta(os.lstat(top), top, os.fspath(dest))
    return True


def _merge_dir(src: str, dest: str, links: dict[tuple[int, int], str]) -> None:
    dirs: list[tuple[str, str, os.stat_result]] = []
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        s, d = entry.path, os.path.join(dest, entry.name)
        st = entry.stat(follow_symlinks=False)
        if _is_whiteout(st):
            _remove(d)
            continue
        if stat.S_ISDIR(st.st_mode):
            if (os.path.lexists(d) and (not os.path.isdir(d) or os.path.islink(d))) or (os.path.isdir(d) and _opaque(s)):
                _remove(d)
            if not os.path.lexists(d):
                os.mkdir(d, 0o700)
            _merge_dir(s, d, links)
            dirs.append((s, d, st))
            continue
        if os.path.lexists(d):
            _remove(d)
        _copy_entry(s, d, st, links)
    for s, d, st in dirs:  # after their content, so their mtimes stay
        _copy_meta(st, s, d)


def _key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_rdev)


def baseline(root: Path) -> Baseline:
    """Every entry under `root` (relative path → stat key), taken before the process runs."""
    out: Baseline = {}
    base = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, base)] = _key(os.lstat(path))
    return out


def diff_into_upper(root: Path, before: Baseline, upper: Path) -> None:
    """Write into `upper` what changed under `root` since `before`, as overlayfs would have."""
    base, up = os.fspath(root), os.fspath(upper)
    links: dict[tuple[int, int], str] = {}
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            seen.add(rel)
            st = os.lstat(path)
            if before.get(rel) == _key(st):
                continue
            _ensure_parents(base, up, rel)
            dest = os.path.join(up, rel)
            if stat.S_ISDIR(st.st_mode):
                if not os.path.isdir(dest):
                    os.mkdir(dest, 0o700)
                    _copy_meta(st, path, dest)
            else:
                _copy_entry(path, dest, st, links)
    for rel in sorted(before):
        parent = os.path.dirname(rel)
        # Only the top of a deleted subtree, and only where the parent is still a directory.
        if rel not in seen and (not parent or (parent in seen and _is_dir(os.path.join(base, parent)))):
            _ensure_parents(base, up, rel)
            os.mknod(os.path.join(up, rel), stat.S_IFCHR | 0o600, 0)
    _fix_dir_times(base, up)


def _is_dir(path: str) -> bool:
    return os.path.isdir(path) and not os.path.islink(path)


def _ensure_parents(base: str, up: str, rel: str) -> None:
    parts = rel.split(os.sep)[:-1]
    for depth in range(1, len(parts) + 1):
        sub = os.path.join(*parts[:depth])
        dest = os.path.join(up, sub)
        if not os.path.isdir(dest):
            os.mkdir(dest, 0o700)
            src = os.path.join(base, sub)
            _copy_meta(os.lstat(src), src, dest)


def _fix_dir_times(base: str, up: str) -> None:
    """Adding entries to the upper's dirs changed their mtimes; give them the rootfs's back."""
    for dirpath, _dirnames, _files in os.walk(up, topdown=False):
        rel = os.path.relpath(dirpath, up)
        src = os.path.join(base, rel) if rel != "." else base
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(src)
            os.utime(dirpath, ns=(st.st_atime_ns, st.st_mtime_ns))
