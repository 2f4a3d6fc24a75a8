"""Per-file fingerprints for COPY/ADD content keys: sha256 over what a copy preserves, never mtime
(sha256, not a faster hash: the keys they go into may be shared between machines).

A fingerprint covers the relative path, file type, permission bits (mode & 0o7777), size, symlink
target, content hash and the security.capability xattr; for trees whose owners are kept (another
stage's filesystem) also uid/gid. The build context's owners are reset to 0 like BuildKit, so they are
left out there, and so is mtime: `touch` must not invalidate a COPY.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Mapping

from layerbuild.errors import BuildError

_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
CAPABILITY_XATTR = "security.capability"

TYPE_CODES = {
    stat.S_IFREG: b"f",
    stat.S_IFDIR: b"d",
    stat.S_IFLNK: b"l",
    stat.S_IFIFO: b"p",
    stat.S_IFCHR: b"c",
    stat.S_IFBLK: b"b",
}


def hash_file(path: str) -> tuple[str, os.stat_result]:
    """sha256 of a regular file's content (not following a final symlink), and its stat after reading.

    Raises BuildError if the file changed while it was read (size or mtime moved), so a hash never
    describes content that did not exist at one instant."""
    for _attempt in range(3):
        fd = os.open(path, _READ_FLAGS)
        try:
            before = os.fstat(fd)
            h = hashlib.sha256()
            while True:
                data = os.read(fd, _CHUNK)
                if not data:
                    break
                h.update(data)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        if (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ctime_ns,
        ):
            return h.hexdigest(), after
    raise BuildError(f"{path!r} keeps changing while it is being read")


def read_capability(path: str) -> bytes:
    """The security.capability xattr of `path` (not followed), or b'' when it has none."""
    try:
        return os.getxattr(path, CAPABILITY_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENOENT):
            return b""
        raise


def fingerprint(
    rel: bytes,
    st_mode: int,
    size: int,
    content: str,
    *,
    link: bytes = b"",
    capability: bytes = b"",
    owner: tuple[int, int] | None = None,
) -> str:
    """The fingerprint of one entry (see the module docstring); `content` is the content or link hash."""
    code = TYPE_CODES.get(stat.S_IFMT(st_mode), b"?")
    parts = [
        rel,
        code,
        b"%o" % (st_mode & 0o7777),
        b"%d" % size,
        link,
        content.encode(),
        capability.hex().encode(),
    ]
    if owner is not None:
        parts.append(b"%d:%d" % owner)
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def changed_paths(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Paths whose fingerprint differs between two selections (added, removed or changed), sorted."""
    keys = old.keys() | new.keys()
    return sorted(k for k in keys if old.get(k) != new.get(k))


def describe_changes(old: Mapping[str, str], new: Mapping[str, str], *, limit: int = 3) -> str | None:
    """A miss reason like "src/app.py changed" or "a, b, c and 4 more files changed"; None if equal."""
    paths = changed_paths(old, new)
    if not paths:
        return None
    shown = ", ".join(paths[:limit])
    if len(paths) > limit:
        return f"{shown} and {len(paths) - limit} more files changed"
    return f"{shown} changed"
