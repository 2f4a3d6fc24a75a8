"""The files of an image archive, read from a tar or a directory and written to either atomically.

Reading never leaves the archive: a tar member that is a link is followed inside the tar only (as
`docker save` links shared layers), a few times at most; a directory's files are opened component
by component without following symlinks. Writing goes to a temp file (or directory) beside the
destination, renamed into place when complete, so a failure leaves nothing under the name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.image.export import atomic_file
from layerbuild.image.manifest import Descriptor
from layerbuild.image.protocol import DAMAGED, check_bytes

MAX_JSON = 16 << 20
_MAX_LINKS = 8


class ArchiveError(LayerbuildError):
    """An image archive that cannot be loaded: damaged, truncated, or not of the shape its format has."""

    def __init__(self, message: str, *, hint: str | None = DAMAGED) -> None:
        super().__init__(message, hint=hint)


class ArchiveFiles(Protocol):
    """Read access to the files of an archive by their names in it."""

    def names(self) -> set[str]: ...

    def member(self, name: str) -> tuple[int, BinaryIO]:
        """The regular file `name`: its size and a reader (valid until the next member is opened)."""
        ...


def read_bytes(files: ArchiveFiles, name: str, desc: Descriptor | None = None) -> bytes:
    """The file `name`, at most MAX_JSON bytes; when `desc` is given, checked against its size and digest."""
    size, src = files.member(name)
    if size > MAX_JSON:
        raise ArchiveError(f"{name!r} in the archive is too large for a JSON document ({size} bytes)")
    data = src.read(size + 1)
    if len(data) != size:
        raise ArchiveError(f"{name!r} in the archive is truncated")
    return data if desc is None else check_bytes(data, desc, repr(name))


def read_json(files: ArchiveFiles, name: str) -> Any:
    try:
        return json.loads(read_bytes(files, name))
    except ValueError as exc:
        raise ArchiveError(f"{name!r} in the archive is not valid JSON: {exc}") from None


class TarFiles:
    """The members of an open tar."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar

    def names(self) -> set[str]:
        return set(self.tar.getnames())

    def member(self, name: str) -> tuple[int, BinaryIO]:
        shown = name
        for _ in range(_MAX_LINKS):
            try:
                member = self.tar.getmember(name)
            except KeyError:
                raise ArchiveError(
                    f"the archive has no {name!r}" + (f" (linked from {shown!r})" if name != shown else ""),
                    hint="is it a docker save or OCI archive, and whole?") from None
            if member.isfile():
                data = self.tar.extractfile(member)
                assert data is not None
                return member.size, cast(BinaryIO, data)
            if not (member.issym() or member.islnk()):
                break
            target = posixpath.join(posixpath.dirname(name), member.linkname) if member.issym() else member.linkname
            name = posixpath.normpath(target)
            if name.startswith(("/", "../")) or name == "..":
                raise ArchiveError(f"{shown!r} in the archive links to {member.linkname!r}, outside the archive")
        raise ArchiveError(f"{shown!r} in the archive is not a regular file")


class DirFiles:
    """The files under a directory (an OCI image layout), opened without following any symlink."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._open: BinaryIO | None = None

    def names(self) -> set[str]:
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*") if not p.is_symlink()}

    def member(self, name: str) -> tuple[int, BinaryIO]:
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ArchiveError(f"{name!r} is not a file name inside the layout")
        if self._open is not None:
            self._open.close()
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.root, flags | os.O_DIRECTORY)
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
                finally:
                    os.close(fd)
                fd = nxt
            try:
                leaf = os.open(parts[-1], flags, dir_fd=fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise ArchiveError(f"the layout has no {name!r}", hint="is it an OCI image layout, and whole?") from None
        except OSError as exc:
            raise ArchiveError(f"cannot open {name!r} in the layout: {exc.strerror or exc}",
                               hint="a layout's files are regular files, not links") from None
        st = os.fstat(leaf)
        if not stat.S_ISREG(st.st_mode):
            os.close(leaf)
            raise ArchiveError(f"{name!r} in the layout is not a regular file")
        self._open = os.fdopen(leaf, "rb")
        return st.st_size, self._open

    def close(self) -> None:
        if self._open is not None:
            self._open.close()


def _info(name: str, size: int, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class TarOut:
    """A deterministic tar being written (PAX, mtime 0, owner 0)."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar

    def add_dir(self, name: str) -> None:
        self.tar.addfile(_info(name, 0, 0o755, tarfile.DIRTYPE))

    def add_bytes(self, name: str, data: bytes) -> None:
        self.tar.addfile(_info(name, len(data)), io.BytesIO(data))

    def add_stream(self, name: str, size: int, src: BinaryIO) -> None:
        self.tar.addfile(_info(name, size), src)


class DirOut:
    """A directory being written (files 0644, directories 0755)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_dir(self, name: str) -> None:
        (self.root / name).mkdir(mode=0o755, exist_ok=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add_stream(name, len(data), io.BytesIO(data))

    def add_stream(self, name: str, size: int, src: BinaryIO) -> None:
        path = self.root / name
        with open(path, "xb") as out:
            left = size
            while left:
                chunk = src.read(min(left, 1 << 20))
                if not chunk:
                    raise ArchiveError(f"{name!r} ended after {size - left} of its {size} bytes")
                out.write(chunk)
                left -= len(chunk)
        os.chmod(path, 0o644)


@contextlib.contextmanager
def writing_tar(dest: str | os.PathLike[str]) -> Iterator[TarOut]:
    """A tar written under a temp name beside `dest` and renamed into place when complete."""
    with atomic_file(dest) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        yield TarOut(tar)


@contextlib.contextmanager
def writing_dir(dest: str | os.PathLike[str]) -> Iterator[DirOut]:
    """A directory written under a temp name beside `dest` (which must not exist) and renamed into
    place when complete."""
    target = Path(os.path.abspath(dest))
    if os.path.lexists(target):
        raise UsageError(f"cannot write the layout {os.fspath(dest)!r}: it exists",
                         hint="give a new directory name, or remove it first")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as exc:
        raise LayerbuildError(f"cannot write {os.fspath(dest)!r}: {exc.strerror or exc}") from exc
    try:
        os.chmod(staging, 0o755)
        yield DirOut(staging)
        os.rename(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise LayerbuildError(f"cannot write {os.fspath(dest)!r}: {exc.strerror or exc}") from exc
        raise
