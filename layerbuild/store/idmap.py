"""Rootless id mapping: the caller's subordinate ids (/etc/subuid, /etc/subgid), newuidmap/newgidmap,
and running file work inside a user namespace where the store's files show their container owners.

Rootless, container uid 0 is the caller and 1..N are the caller's subordinate ids, so a file that a
container made as uid 1000 belongs on the host to the 1000th subordinate id. The caller cannot chown
to those ids, read their 0600 files or delete inside their directories; a process in a user namespace
with the same mapping can, and it sees the ids as the container does. `call_in_userns` runs a function
there (in a forked child, as `podman unshare` runs a command), which is how layers are unpacked into
snapshots, upper dirs are written as layers and such trees are removed. Without a subordinate range
(or without newuidmap) the mapping is the caller alone, as uid 0: every other id is refused with a
hint on how to add a range.

This lives in `store` because the store's own clean-up (prune, temp dirs) needs it and may import
nothing above itself.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from layerbuild.errors import LayerbuildError, StoreError

T = TypeVar("T")

CLONE_NEWUSER = 0x10000000
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
Range = tuple[int, int, int]  # (first id inside, first id outside, count)
# Where an unprivileged unpack (a rootless build's view of a stage) keeps an entry's owner from the
# layer, "uid:gid", since it cannot chown; COPY --from reads it back.
OWNER_XATTR = "user.layerbuild.owner"


class UnmappedIdError(LayerbuildError):
    """An owner that the rootless mapping cannot represent (no subordinate ids, or outside their range)."""


@dataclass(frozen=True)
class IdMap:
    """The uid and gid mappings of a rootless user namespace: container 0 is the caller, then subids."""

    uids: tuple[Range, ...]
    gids: tuple[Range, ...]
    newuidmap: str | None = None  # None: the single-id mapping, which the caller may write itself
    newgidmap: str | None = None
    user: str = ""  # the caller's name, for messages

    @property
    def single(self) -> bool:
        return self.newuidmap is None

    def size(self) -> tuple[int, int]:
        """How many uids and gids exist inside (ids 0 .. size-1)."""
        return sum(r[2] for r in self.uids), sum(r[2] for r in self.gids)

    def has(self, uid: int, gid: int) -> bool:
        return _inside(self.uids, uid) and _inside(self.gids, gid)

    def uid_args(self) -> list[str]:
        return [str(n) for r in self.uids for n in r]

    def gid_args(self) -> list[str]:
        return [str(n) for r in self.gids for n in r]


def _inside(ranges: tuple[Range, ...], ident: int) -> bool:
    return any(first <= ident < first + count for first, _, count in ranges)


def read_ranges(path: str, name: str, uid: int) -> list[tuple[int, int]]:
    """The (start, count) ranges that `path` (subuid/subgid format) grants the user `name` / `uid`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (name, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            out.append((start, count))
    return out


def _ranges(own: int, granted: list[tuple[int, int]]) -> tuple[Range, ...]:
    out: list[Range] = [(0, own, 1)]
    inside = 1
    for start, count in granted:
        if start <= own < start + count:  # the caller's own id is already container 0
            continue
        out.append((inside, start, count))
        inside += count
    return tuple(out)


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def single_map() -> IdMap:
    return IdMap(((0, os.geteuid(), 1),), ((0, os.getegid(), 1),), user=_user_name())


@functools.cache
def current() -> IdMap:
    """The mapping rootless sandboxes and file work use for this process's user (read once)."""
    uid, gid, name = os.geteuid(), os.getegid(), _user_name()
    subuids, subgids = read_ranges(SUBUID, name, uid), read_ranges(SUBGID, name, uid)
    tools = [shutil.which(t) or (f"/usr/bin/{t}" if os.access(f"/usr/bin/{t}", os.X_OK) else None)
             for t in ("newuidmap", "newgidmap")]
    if not subuids or not subgids or None in tools:
        return single_map()
    return IdMap(_ranges(uid, subuids), _ranges(gid, subgids), tools[0], tools[1], name)


def missing_hint() -> str:
    """How to give the current user subordinate ids (or what is missing for them to be used)."""
    name = current().user  # outside the user namespace (inside one, the cached answer is the caller's)
    if shutil.which("newuidmap") is None and not os.access("/usr/bin/newuidmap", os.X_OK):
        return "install newuidmap and newgidmap (Debian: apt-get install uidmap) and give the user a range in " \
               f"{SUBUID} and {SUBGID}"
    return (f"rootless, only uid/gid 0 exist in the container unless {SUBUID} and {SUBGID} give {name} a range, "
            f"e.g. as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}")


def unmapped(what: str, uid: int, gid: int) -> UnmappedIdError:
    ids = current()
    if ids.single:
        return UnmappedIdError(f"{what} needs uid {uid} / gid {gid}, but this rootless user has no subordinate "
                               "ids: only 0 is mapped", hint=missing_hint())
    nuid, ngid = ids.size()
    return UnmappedIdError(f"{what} needs uid {uid} / gid {gid}, outside the subordinate ids of this user "
                           f"(0-{nuid - 1} / 0-{ngid - 1} are mapped)",
                           hint=f"give the user a larger range in {SUBUID} and {SUBGID}")


def write_maps(pid: int, ids: IdMap) -> None:
    """Map the user namespace of `pid` with newuidmap/newgidmap (setuid helpers that check the ranges)."""
    import subprocess

    assert ids.newuidmap is not None and ids.newgidmap is not None
    # Both at once: each setuid helper takes milliseconds, and neither depends on the other.
    running = [(tool, subprocess.Popen([tool, str(pid), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True))
               for tool, args in ((ids.newuidmap, ids.uid_args()), (ids.newgidmap, ids.gid_args()))]
    failures = []
    for tool, proc in running:
        _, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{os.path.basename(tool)} failed: {err.strip() or proc.returncode}")
    if failures:
        raise UnmappedIdError("; ".join(failures), hint=f"check the user's ranges in {SUBUID} and {SUBGID}")


@functools.cache
def _libc() -> Any:
    import ctypes  # loaded once, in the parent: importing it in every forked child costs milliseconds

    return ctypes.CDLL(None, use_errno=True)


def _unshare_user() -> None:
    import ctypes

    if _libc().unshare(CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare a user namespace: {os.strerror(err)}")


def _write_own_map(ids: IdMap) -> None:
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {ids.uids[0][1]} 1"),
                       ("gid_map", f"0 {ids.gids[0][1]} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def call_in_userns(fn: Callable[..., T], *args: object, ids: IdMap | None = None,
                   sink: BinaryIO | None = None) -> T:
    """`fn(*args)` run as root of a new user namespace with the rootless mapping (`current()` unless
    `ids`), in a forked child; its result or exception comes back pickled. With `sink`, `fn` gets a
    binary file as its first argument, and what it writes there is copied to `sink` as it comes."""
    import pickle

    ids = ids or current()
    current()  # read before forking: messages in the child name the caller, not its root
    _libc()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    data_r, data_w = os.pipe() if sink is not None else (-1, -1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipes and never returns
        _child(fn, args, ids, (ready_r, go_w, res_r, data_r), ready_w, go_r, res_w, data_w)
    for fd in (ready_w, go_r, res_w, data_w):
        if fd >= 0:
            os.close(fd)
    done = False
    try:
        if not ids.single:
            if os.read(ready_r, 1) == b"u":
                write_maps(pid, ids)
            os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        if sink is not None:
            while chunk := os.read(data_r, 1 << 20):
                sink.write(chunk)
        payload = _read_all(res_r)
        os.waitpid(pid, 0)
        done = True
    finally:
        for fd in (ready_r, go_w, res_r, data_r):
            if fd >= 0:
                os.close(fd)
        if not done:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    if not payload:
        raise StoreError("the helper in the rootless user namespace died without an answer")
    kind, value, hint = pickle.loads(payload)
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if isinstance(value, LayerbuildError):
        value.hint = hint
    raise value


def _child(fn: Callable[..., object], args: tuple[object, ...], ids: IdMap, unused: tuple[int, ...],
           ready_w: int, go_r: int, res_w: int, data_w: int) -> None:  # pragma: no cover - forked child
    import pickle

    code = 0
    try:
        for fd in unused:
            if fd >= 0:
                os.close(fd)
        try:
            _unshare_user()
            if ids.single:
                _write_own_map(ids)
            else:
                os.write(ready_w, b"u")
                if os.read(go_r, 1) != b"g":
                    os._exit(1)  # the parent could not map us: it reports why
            if data_w >= 0:
                with os.fdopen(data_w, "wb") as out:
                    value = fn(out, *args)
            else:
                value = fn(*args)
            result: tuple[str, object, str | None] = ("ok", value, None)
        except BaseException as exc:
            result = ("err", exc, getattr(exc, "hint", None))
        try:
            payload = pickle.dumps(result)
        except Exception:
            payload = pickle.dumps(("err", LayerbuildError(str(result[1])), result[2]))
        view = memoryview(payload)
        while view:
            view = view[os.write(res_w, view):]
    except BaseException:
        code = 1
    os._exit(code)


def recorded_owner(path: str) -> tuple[int, int] | None:
    """The owner an unprivileged unpack recorded on `path` (see OWNER_XATTR), if any."""
    try:
        uid, _, gid = os.getxattr(path, OWNER_XATTR, follow_symlinks=False).partition(b":")
        return int(uid), int(gid)
    except (OSError, ValueError):
        return None


def view_owner(path: str, st: os.stat_result) -> tuple[int, int]:
    """The container owner of an entry of a rootless (unprivileged) unpack: the recorded one, else
    what the caller owns is container root."""
    recorded = recorded_owner(path)
    if recorded is not None:
        return recorded
    return (0 if st.st_uid == os.geteuid() else st.st_uid), (0 if st.st_gid == os.getegid() else st.st_gid)


def in_initial_userns() -> bool:
    """Whether this process sees the host's ids (it is not inside a user namespace)."""
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True
