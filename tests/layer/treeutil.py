"""Helpers for layer tests: describe a directory tree completely, so two trees can be compared."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any

from layerbuild.layer import ApplyResult, Compression, LayerInfo, apply_layer, write_layer


def xattrs_of(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    keep = [n for n in names if not n.startswith(("trusted.overlay.", "user.overlay.", "security.selinux"))]
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in keep))


def snapshot(root: str | Path, *, mtimes: bool = True, owners: bool = True) -> dict[str, Any]:
    """Every entry below `root`: type, mode, owner, mtime, content digest, link target, xattrs, and
    hardlink identity (the first path, in sorted order, of each multiply linked inode)."""
    root = os.fsencode(os.fspath(root))
    out: dict[str, Any] = {}
    first_of_inode: dict[tuple[int, int], str] = {}
    paths: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            paths.append(os.path.join(dirpath, name))
    for path in sorted(paths):
        rel = os.fsdecode(os.path.relpath(path, root))
        st = os.lstat(path)
        info: dict[str, Any] = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode)}
        if owners:
            info["owner"] = (st.st_uid, st.st_gid)
        if mtimes:
            info["mtime"] = st.st_mtime_ns // 10**9
        if stat.S_ISREG(st.st_mode):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            info["sha256"] = h.hexdigest()
            info["size"] = st.st_size
        elif stat.S_ISLNK(st.st_mode):
            info["target"] = os.readlink(path)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            info["link_group"] = first_of_inode.setdefault((st.st_dev, st.st_ino), rel)
        if not stat.S_ISLNK(st.st_mode):
            info["xattrs"] = xattrs_of(path)
        out[rel] = info
    return out


def layer_bytes(
    root: str | Path, compression: Compression = Compression.ZSTD, **kw: Any
) -> tuple[bytes, LayerInfo]:
    buf = io.BytesIO()
    info = write_layer(root, buf, compression=compression, **kw)
    return buf.getvalue(), info


def apply_bytes(data: bytes, dest: str | Path, **kw: Any) -> ApplyResult:
    return apply_layer(io.BytesIO(data), dest, **kw)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_members(data: bytes) -> list[Any]:
    """The members of an uncompressed tar, read by the standard library."""
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()
