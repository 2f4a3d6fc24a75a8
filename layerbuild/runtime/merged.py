"""The merged view of overlay lower dirs, read without mounting: path lookup, symlinks, mount-point stubs.

The sandbox needs to know, before the overlay exists, where each mount point lands (resolving the
image's symlinks inside the image, never on the host) and which are missing. Missing ones are made
in a *stub layer*, an extra lower dir on top, so that the process's upper dir never holds them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layerbuild.runtime.spec import SandboxError

_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
_MAX_LINKS = 40


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    for name in _OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class MergedView:
    """Lower dirs (given bottom first) seen as overlayfs would merge them."""

    def __init__(self, lowers: Sequence[Path]) -> None:
        self.top_first = [os.fspath(p) for p in reversed(lowers)]

    def entry(self, parts: Sequence[str]) -> str | None:
        """The host path of the visible entry at `parts` (no symlinks followed), or None.

        Each returned path runs through real directories of one layer only: a lower layer's symlink
        under an upper directory is hidden, never followed on the host."""
        if not parts:
            return self.top_first[0] if self.top_first else None
        live = self._live(parts)
        return None if live is None else os.path.join(live[0], *parts)

    def layers_at(self, parts: Sequence[str]) -> list[str]:
        """The host paths (top layer first) whose contents overlayfs merges at the directory `parts`;
        empty if it is no directory."""
        live = self._live(parts) if parts else self.top_first
        if not live:
            return []
        paths = [os.path.join(layer, *parts) for layer in live]
        return [p for p in paths if os.path.isdir(p) and not os.path.islink(p)] if os.path.isdir(paths[0]) \
            and not os.path.islink(paths[0]) else []

    def _live(self, parts: Sequence[str]) -> list[str] | None:
        live = self.top_first
        for depth in range(len(parts)):
            rel = os.path.join(*parts[: depth + 1])
            nxt: list[str] = []
            top_is_dir = False
            for layer in live:
                path = os.path.join(layer, rel)
                try:
                    st = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if _is_whiteout(st):
                    break
                if nxt and not stat.S_ISDIR(st.st_mode):
                    break  # an upper directory hides what the lower layers have at its path
                if not nxt:
                    top_is_dir = stat.S_ISDIR(st.st_mode)
                nxt.append(layer)
                if not stat.S_ISDIR(st.st_mode) or _opaque(path):
                    break  # a file, or an opaque dir, hides everything below it
            if not nxt:
                return None
            if depth < len(parts) - 1 and not top_is_dir:
                return None  # a file or a symlink cannot have children here (resolve follows links)
            live = nxt
        return live

    def resolve(self, path: str) -> tuple[list[str], str | None]:
        """`path` with the image's symlinks followed inside the image: (components, host path or None)."""
        todo = [p for p in path.split("/") if p]
        done: list[str] = []
        links = 0
        while todo:
            name = todo.pop(0)
            if name == ".":
                continue
            if name == "..":
                if done:
                    done.pop()
                continue
            found = self.entry([*done, name])
            if found is not None and os.path.islink(found):
                links += 1
                if links > _MAX_LINKS:
                    raise SandboxError(f"too many levels of symbolic links in {path!r} inside the image")
                target = os.readlink(found)
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p] + todo
                continue
            done.append(name)
        return done, self.entry(done)

    def read(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The contents of a regular file in the image, or None if there is none."""
        _, found = self.resolve(path)
        if found is None:
            return None
        try:  # O_NOFOLLOW: what resolve found is never a symlink, and must not become one
            fd = os.open(found, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read(limit)


@dataclass(frozen=True)
class MountPoint:
    """Where one mount lands in the image: the resolved absolute path and whether it is a file."""

    path: str
    is_file: bool


def place_mounts(view: MergedView, wanted: Sequence[tuple[str, bool]], stubs: Path | None) -> list[MountPoint]:
    """Resolve each (path, is_file) inside the image; create what is missing under `stubs`.

    `stubs` is a fresh directory to be used as the top lower dir (its directories copy the metadata of
    the directories they stand over), or None to create the stubs in the view's single (writable) dir.
    """
    out: list[MountPoint] = []
    made: list[tuple[Path, str | None]] = []
    for path, is_file in wanted:
        parts, found = view.resolve(path)
        if not parts:
            raise SandboxError(f"cannot mount over the root directory ({path!r})")
        if found is None:
            base = stubs if stubs is not None else Path(view.top_first[0])
            made += _make_stub(view, base, parts, is_file)
        elif is_file != (not os.path.isdir(found)):
            kind = "a file" if is_file else "a directory"
            raise SandboxError(f"cannot mount {kind} at {path!r}: the image has something else there")
        out.append(MountPoint("/" + "/".join(parts), is_file))
    for dest, source in reversed(made):  # children first, so the parents' times are set last
        if source is None:
            continue
        st = os.lstat(source)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        if os.geteuid() == 0:
            os.lchown(dest, st.st_uid, st.st_gid)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    return out


def _make_stub(view: MergedView, base: Path, parts: list[str], is_file: bool) -> list[tuple[Path, str | None]]:
    made: list[tuple[Path, str | None]] = []
    for depth in range(1, len(parts) + 1):
        dest = base.joinpath(*parts[:depth])
        source = view.entry(parts[:depth])
        last = depth == len(parts)
        if source is not None and not os.path.isdir(source) and not last:
            raise SandboxError(f"cannot mount at {'/' + '/'.join(parts)!r}: {parts[depth - 1]!r} is not a directory")
        if dest.exists() or dest.is_symlink():
            continue
        if last and is_file:
            dest.touch(0o644)
        else:
            dest.mkdir(0o755)
        made.append((dest, source))
    return made
