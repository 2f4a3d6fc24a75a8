"""Where things live under a store root, and the file primitives (fsync, rename, locks) they rely on."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
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
    def recipes(self) -> Path:
        """Layer blobs kept as their frames in other blobs (see chunks.py), one small file each."""
        return self.root / "recipes"

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
    def seccomp(self) -> Path:
        """Compiled seccomp programs by what decides them (runtime.seccomp), read instead of compiling."""
        return self.root / "seccomp"

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
        for path in (self.blobs, self.recipes, self.tmp, self.snapshots, self.quarantine, self.locks):
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

    @property
    def reserve(self) -> Path:
        """Space set aside (RESERVE_BYTES) for prune to give back on a full disk, so that its index
        transaction can be written and it can free the rest."""
        return self.locks / "space.reserve"


RESERVE_BYTES = 1 << 20
# The reserve is only (re)made while more than this is free: it must not take a nearly full disk's last bytes.
_RESERVE_ONLY_ABOVE = 8 * RESERVE_BYTES


def keep_reserve(layout: Layout) -> None:
    """Make the space reserve if it is missing and the disk has room to spare; never fails."""
    path = layout.reserve
    if path.exists():
        return
    try:
        st = os.statvfs(layout.locks)
        if st.f_bavail * st.f_frsize < _RESERVE_ONLY_ABOVE:
            return
        tmp = layout.locks / random_name(".reserve-")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


def release_reserve(layout: Layout) -> bool:
    """Give the space reserve back to the filesystem; True if there was one."""
    try:
        os.unlink(layout.reserve)
    except FileNotFoundError:
        return False
    return True


def random_name(prefix: str, suffix: str = "") -> str:
    return f"{prefix}{os.getpid()}-{os.urandom(8).hex()}{suffix}"


# Scratch directories under the root's tmp/ carry their owner in the name, `<prefix><owner>-<random>`
# with owner `<pid>.<start time>.<pid namespace>`: the start time tells a live owner from a new
# process that got the same pid, and the namespace keeps a command from judging pids it cannot see.
SCRATCH_PREFIXES = ("run-", "rootfs-", "workdir-", "unpack-", "context-")
# Scratch a build keeps in the system's temp dir (ADD downloads, unpacked local archives): only
# these names are ever swept there, since other programs' files share that directory.
SYSTEM_SCRATCH_PREFIXES = ("layerbuild-copy-", "layerbuild-unpack-")


def proc_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of `pid`, or None if there is no such live process
    (a zombie has finished running). With the pid it names one process, whatever reuses the pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) <= 19 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


_OWNER: tuple[int, str] | None = None


def scratch_owner() -> str:
    """This process as a scratch directory's owner: `<pid>.<start time>.<pid namespace>`."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or _OWNER[0] != pid:
        _OWNER = (pid, f"{pid}.{proc_start_time(pid) or 0}.{_pid_namespace()}")
    return _OWNER[1]


def make_scratch(directory: Path, prefix: str) -> Path:
    """A new private directory `<prefix><owner>-<random>` in `directory` (see `scratch_owner`)."""
    import tempfile

    directory.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{scratch_owner()}-", dir=directory))


def system_scratch(prefix: str) -> Path:
    """A new private directory in the system's temp dir, named with its owner like `make_scratch`,
    so that the next command can remove it if this process dies (`clean_system_scratch`)."""
    import tempfile

    assert prefix in SYSTEM_SCRATCH_PREFIXES
    return make_scratch(Path(tempfile.gettempdir()), prefix)


def scratch_owner_dead(name: str, prefixes: tuple[str, ...] = SCRATCH_PREFIXES) -> bool:
    """True if `name` is a scratch directory's name whose owner is known to be gone.

    Names without an owner (older versions made them) and owners in another pid namespace are
    never judged dead: their directory is left alone."""
    prefix = next((p for p in prefixes if name.startswith(p)), None)
    if prefix is None:
        return False
    return owner_dead(name[len(prefix) :].split("-", 1)[0])


def owner_dead(owner: str) -> bool:
    """True if `owner` (as `scratch_owner` spells one) is a process of this pid namespace that is gone."""
    parts = owner.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or parts[2] != _pid_namespace():
        return False
    return str(proc_start_time(int(parts[0]))) != parts[1]


_WRITEBACK_FLAG = 2  # SYNC_FILE_RANGE_WRITE: start writing the range out, wait for nothing
_sync_file_range: object = None  # the libc function once looked up; False where there is none


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing `length` bytes of `fd` from `offset` to disk, without waiting
    (Linux's sync_file_range): a large file written this way as it grows meets its fsync with little
    left to write, so the fsync that makes it durable no longer waits for all of it at the end. A
    hint only: where the call is missing or fails, the fsync does all the work, as before."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.sync_file_range
            fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            fn.restype = ctypes.c_int
            _sync_file_range = fn
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, _WRITEBACK_FLAG)  # type: ignore[operator]


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
