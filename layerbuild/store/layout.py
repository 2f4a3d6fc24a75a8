"""Where things live under a store root, and the file primitives (fsync, rename, locks) they rely on."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from layerbuild.digest import split_digest


def resolve_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store root: `--root DIR`, else `$LAYERBUILD_ROOT`, else `$XDG_DATA_HOME/layerbuild`."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("LAYERBUILD_ROOT")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return (base / "layerbuild").absolute()


@dataclass(frozen=True)
class Layout:
    """The directory layout of one store root; `create()` makes it exist."""

    root: Path

    @property
    def blobs(self) -> Path:
        return self.root / "blobs" / "sha256"

    @property
    def tmp(self) -> Path:
        # Temp files must be on the same filesystem as their final place so rename is atomic,
        # hence under the root rather than in $TMPDIR.
        return self.root / "tmp"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def index_db(self) -> Path:
        return self.root / "index.db"

    @property
    def parsed(self) -> Path:
        """The last parse of each Dockerfile's bytes (worker), so an unchanged one skips the grammar."""
        return self.root / "parsed"

    @property
    def fastpath(self) -> Path:
        """No-op records: the last build of a Dockerfile and target, replayed when nothing changed (worker)."""
        return self.root / "fastpath"

    @property
    def json_caches(self) -> tuple[Path, ...]:
        """Directories of disposable JSON files that others write under the root: `df` counts them,
        `prune --all` clears them, `fsck` removes unreadable ones. Their writers create them on demand."""
        return (self.parsed, self.fastpath)

    def create(self) -> None:
        for path in (self.blobs, self.tmp, self.snapshots, self.quarantine, self.locks):
            path.mkdir(parents=True, exist_ok=True)
        # Snapshots and scratch dirs hold images' device nodes and setuid files as they are: only the
        # owner may reach them (like Docker's 0700 /var/lib/docker), including in a store made before.
        for path in (self.root, self.tmp, self.snapshots):
            private(path)

    def blob_path(self, digest: str) -> Path:
        _, hexpart = split_digest(digest)
        return self.blobs / hexpart

    def snapshot_path(self, diff_id: str) -> Path:
        _, hexpart = split_digest(diff_id)
        return self.snapshots / hexpart

    def snapshot_lock(self, diff_id: str) -> Path:
        _, hexpart = split_digest(diff_id)
        return self.locks / f"snapshot-{hexpart}.lock"

    @property
    def gc_lock(self) -> Path:
        return self.locks / "gc.lock"


def random_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{os.getpid()}-{secrets.token_hex(8)}{suffix}"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_locked_temp(directory: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new file in `directory`, holding an exclusive flock on it.

    The lock says "a live process owns this file": a cleaner deletes a temp file only after it
    can take the lock itself, so files of crashed writers (whose locks the kernel dropped) go,
    and files being written stay. A cleaner may unlink the file between our create and our
    lock; we detect that by comparing inodes and start over.
    """
    while True:
        path = directory / random_name(prefix, suffix)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, path
        os.close(fd)


def try_remove_orphan(path: Path) -> bool:
    """Delete the temp file `path` unless a live writer holds its flock (see `create_locked_temp`).

    True if removed. The file is its own lock: we take it, check the name still refers to the
    file we locked, and unlink while holding it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return False
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold an flock on the lock file `path` (created if missing); yields False if non-blocking and busy."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        try:
            fcntl.flock(fd, flags)
        except OSError as exc:
            if not blocking and exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                yield False
                return
            raise
        yield True
    finally:
        os.close(fd)


def private(path: Path) -> None:
    """Make a directory of ours 0700 (one owned by someone else is left as it is)."""
    st = path.stat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        os.chmod(path, st.st_mode & 0o7700)
