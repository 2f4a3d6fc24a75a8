"""Resolve paths inside a destination directory without ever leaving it, the way the container will see them.

Every component is opened relative to its parent's file descriptor with O_NOFOLLOW, so nothing the
kernel resolves can jump out. Symlinks met on the way are followed by hand: an absolute target starts
again at the destination root (as it will inside the container), and a target that climbs above the
root with `..` is refused rather than clamped, since only a crafted archive writes through one.
"""

from __future__ import annotations

import os
import stat

from layerbuild.errors import UnsafeArchiveError

_MAX_SYMLINKS = 40  # what Linux allows in one lookup
_MAX_CACHED_FDS = 256  # stay well under the usual 1024 open-files limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[bytes, ...]


def split_entry_path(path: bytes, entry: bytes) -> Parts:
    """An archive path as components below the root: leading `/` stripped, `.` dropped, `..` collapsed.

    Stripping `/` is what Docker and containerd do with absolute member names; a `..` that would climb
    above the root is refused.
    """
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                raise UnsafeArchiveError(f"entry {_show(entry)} points above the destination root with '..'")
            parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def _show(path: bytes) -> str:
    return repr(os.fsdecode(path))


class RootFS:
    """A destination directory and a cache of open directory fds, keyed by path as written in the archive.

    The owner calls `invalidate()` whenever it removes or replaces a directory or symlink, since cached
    fds may then name directories that are no longer where the path leads.
    """

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.root_fd = os.open(dest, _DIR_FLAGS & ~os.O_NOFOLLOW)
        self._cache: dict[Parts, tuple[int, Parts]] = {}
        self._stale: set[int] = set()

    def close(self) -> None:
        self.invalidate()
        self._bury()
        os.close(self.root_fd)

    def invalidate(self) -> None:
        """Forget every cached directory. Their fds stay open until the next `dir_fd` call, so the
        caller may finish the entry it is working on with the fds it holds (and no fd number it holds
        can be reused meanwhile)."""
        self._stale |= {fd for fd, _ in self._cache.values()} - {self.root_fd}
        self._cache.clear()

    def _bury(self) -> None:
        for fd in self._stale:
            os.close(fd)
        self._stale.clear()

    def dir_fd(self, parts: Parts, *, create: bool, entry: bytes) -> int | None:
        """An fd (owned by this object) for the directory at `parts`, or None if missing and not `create`.

        Missing directories are made with mode 0755, like other runtimes do for implicit parents.
        """
        if len(self._cache) >= _MAX_CACHED_FDS:
            self.invalidate()
        self._bury()
        found = self._dir(parts, create, entry, 0)
        return None if found is None else found[0]

    def _dir(self, parts: Parts, create: bool, entry: bytes, depth: int) -> tuple[int, Parts] | None:
        if not parts:
            return self.root_fd, ()
        hit = self._cache.get(parts)
        if hit is not None:
            return hit
        parent = self._dir(parts[:-1], create, entry, depth)
        if parent is None:
            return None
        pfd, preal = parent
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            if not create:
                return None
            try:
                os.mkdir(name, 0o755, dir_fd=pfd)
            except FileExistsError:
                pass
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                os.chmod(name, 0o755, dir_fd=pfd)  # not the umask's choice
        if stat.S_ISLNK(st.st_mode):
            if depth >= _MAX_SYMLINKS:
                raise UnsafeArchiveError(f"entry {_show(entry)}: too many levels of symbolic links")
            target = os.readlink(name, dir_fd=pfd)
            start = () if target.startswith(b"/") else preal
            result = self._follow(start, target, create, entry, depth + 1)
        elif stat.S_ISDIR(st.st_mode):
            result = os.open(name, _DIR_FLAGS, dir_fd=pfd), (*preal, name)
        else:
            where = os.fsdecode(b"/".join(parts))
            raise UnsafeArchiveError(f"entry {_show(entry)}: {where!r} in the destination is not a directory")
        if result is None:
            return None
        self._cache[parts] = result
        self._cache.setdefault(result[1], result)  # a symlinked path shares its target's fd
        return result

    def _follow(
        self, start: Parts, target: bytes, create: bool, entry: bytes, depth: int
    ) -> tuple[int, Parts] | None:
        current = start
        for part in target.split(b"/"):
            if part in (b"", b"."):
                continue
            if part == b"..":
                if not current:
                    raise UnsafeArchiveError(
                        f"entry {_show(entry)} goes through a symlink ({_show(target)}) that points outside the destination"
                    )
                current = current[:-1]
                continue
            found = self._dir((*current, part), create, entry, depth)
            if found is None:
                return None
            current = found[1]
        return self._dir(current, create, entry, depth)
