"""The `layerbuild` command's first steps: hand the command to this user's resident process when one
runs, else run it here, and then start that process for the commands that follow.

The resident process (`cli.daemon`) has the whole of layerbuild imported already and forks a child
per command, so a command that goes to it skips the interpreter's start-up work of loading layerbuild
(most of a no-op build's time). Only what cannot tell the difference goes there; everything else
runs in this process as it always did:

- the verb must be one that needs no controlling terminal and asks nothing interactively (not
  `login`, `exec`, `compose`, `machine`, `bench`, `serve` or `daemon`; no `run -i`/`-t`), and no
  remote host may be named (`-H`, `--machine`, `LAYERBUILD_HOST`, `LAYERBUILD_MACHINE`);
- `LAYERBUILD_DAEMON=0` turns it off for a command (it neither goes to a daemon nor starts one);
- the child takes this process's arguments, environment, working directory, umask, resource
  limits and standard input/output/error (the descriptors themselves); it refuses (and the command
  runs here) when this process has other namespaces, cgroups, groups or capabilities than the
  daemon, or when layerbuild's files changed since the daemon started.

A command that could have gone to a daemon but found none (or found one ending because layerbuild
changed) starts one once it has run, as Gradle and Bazel start their servers: a detached process
(its own session, working directory `/`, standard descriptors on /dev/null and its log, none of the
caller's other descriptors) that ends after three idle hours. `layerbuild daemon start` does the
same in the foreground of the command; `layerbuild daemon stop` ends it.

This module imports only what the hand-over needs, and of those only modules built into the
interpreter or its C extensions (`_socket`, `_signal`, `marshal`: not `socket`, `signal` or `json`,
whose enum tables and parsers cost a client more than the rest of its start-up): it runs before
anything else of layerbuild. Both ways, a message is four bytes of length (big-endian) and a
`marshal`ed dict: the two ends are the same interpreter (its path is part of the socket's name and
of the request), and only this user's processes reach the socket.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

# Verbs a child of the daemon runs exactly as this process would (see the module docstring).
FORWARDED = frozenset(("build", "parse", "import", "df", "prune", "fsck", "images", "inspect", "history", "tag",
                       "rmi", "run", "ps", "logs", "stop", "rm", "bundle", "save", "load", "push", "pull",
                       "logout", "network"))
# Signals this process passes on to the child running its command.
_PASSED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT")
NAMESPACES = ("mnt", "net", "pid", "ipc", "uts", "user", "cgroup")
# This copy of layerbuild: the package directory (what a daemon imports and watches).
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDLE_TIMEOUT = 3 * 3600.0  # seconds without a command before a daemon ends (0: never)
RETRY_FAILED_START = 3600.0  # seconds after a failed start before a command starts a daemon again
# Set by `forward`: the command was for a daemon, but none answered it (none runs, or the one that
# ran is ending), so one is started once the command has run here.
_START_AFTER = [False]


def forwardable(argv: list[str]) -> bool:
    """Whether the command `argv` may run in a child of the daemon (see the module docstring)."""
    if os.environ.get("LAYERBUILD_DAEMON") == "0" or os.environ.get("LAYERBUILD_HOST") \
            or os.environ.get("LAYERBUILD_MACHINE"):
        return False
    verb, rest = verb_of(argv)
    if verb not in FORWARDED:
        return False
    if any(a in ("-H", "--host", "--machine") or a.startswith(("--host=", "--machine=")) for a in rest):
        return False
    if verb == "run":
        # Conservative: any word that could ask for a terminal or stdin keeps the command here
        # (a container command's own `ls -lt` too, which only costs the start-up).
        for a in rest:
            if a.startswith(("--interactive", "--tty")) or (a.startswith("-") and not a.startswith("--")
                                                             and ("i" in a or "t" in a)):
                return False
    return True


def verb_of(argv: list[str]) -> tuple[str | None, list[str]]:
    """The verb of the command `argv` (after the global `--root DIR`) and the words after it."""
    args = iter(argv)
    for arg in args:
        if arg == "--root":
            next(args, None)
        elif not arg.startswith("--root="):
            return arg, list(args)
    return None, []


def identity() -> str:
    """What names a daemon: this interpreter and this copy of layerbuild (two installs never share one)."""
    return f"{sys.executable}\0{sys.prefix}\0{PACKAGE}"


def socket_dir(create: bool = False) -> str | None:
    """This user's directory for daemon sockets: `$XDG_RUNTIME_DIR/layerbuild`, else
    `/tmp/layerbuild-UID`; None when it is missing (and not `create`d) or is not this user's own
    (owned by another, reachable by others, or a symlink): nothing is trusted there then."""
    import stat

    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        path = os.path.join(runtime, "layerbuild")
    else:
        path = f"/tmp/layerbuild-{uid}"
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        return None
    return path


def socket_path(create: bool = False) -> str | None:
    """The socket of the daemon for this interpreter and copy of layerbuild, in `socket_dir`."""
    import zlib

    folder = socket_dir(create)
    if folder is None:
        return None
    key = zlib.crc32(identity().encode("utf-8", "surrogateescape"))
    return os.path.join(folder, f"daemon-{key:08x}.sock")


def open_lock(socket: str) -> int:
    """The descriptor of the lock file beside the daemon's `socket` (held by the daemon that runs there)."""
    return os.open(socket + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def failed_path(socket: str) -> str:
    """Beside the daemon's `socket`: the reason its last start failed, while that holds (see
    `start_detached`)."""
    return socket[: -len(".sock")] + ".failed"


def log_path(socket: str) -> str:
    """The daemon's log (its standard error) beside its `socket`."""
    return socket[: -len(".sock")] + ".log"


def connect_to(sock: object, path: str, *, bind: bool = False) -> None:
    """`sock.connect(path)` (or `bind`), for a path longer than a unix socket's address can hold too:
    then through the directory's /proc/self/fd entry, which the kernel resolves."""
    if len(os.fsencode(path)) < 100:
        (sock.bind if bind else sock.connect)(path)  # type: ignore[attr-defined]
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{folder}/{os.path.basename(path)}"
        (sock.bind if bind else sock.connect)(short)  # type: ignore[attr-defined]
    finally:
        os.close(folder)


def namespaces(pid: str = "self") -> dict[str, int]:
    """The inode of each namespace of process `pid` (those /proc shows)."""
    out = {}
    for name in NAMESPACES:
        try:
            out[name] = os.stat(f"/proc/{pid}/ns/{name}").st_ino
        except OSError:
            pass
    return out


def _limits() -> dict[str, list[int]]:
    import resource

    out = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            try:
                out[name] = list(resource.getrlimit(getattr(resource, name)))
            except (OSError, ValueError):
                pass
    return out


MAX_MESSAGE = 16 << 20  # bytes: a request carries the environment, an answer a few fields


def pack(message: dict[str, Any]) -> bytes:
    """A message as it goes over the socket: its length (four bytes, big-endian), then its marshal form."""
    import marshal

    body = marshal.dumps(message)
    return len(body).to_bytes(4, "big") + body


def unpack(body: bytes) -> dict[str, Any]:
    """The message in `body` (what followed its length); ValueError when it is not one."""
    import marshal

    try:
        message = marshal.loads(body)
    except (EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"not a message: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("not a message: not a dict")
    return message


def _request(argv: list[str]) -> bytes:
    umask = os.umask(0o022)
    os.umask(umask)
    return pack({
        # (namespaces, credentials and cgroup the daemon reads from /proc/PID itself, not from here)
        "identity": identity(), "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
        "limits": _limits(),
    })


def forward(argv: list[str]) -> int | None:
    """Run `argv` in a child of the daemon and return its exit code; None when it is not for the
    daemon (see the module docstring), when none runs, or when its child refused it."""
    _START_AFTER[0] = False
    if not forwardable(argv):
        return None
    path = socket_path()
    if path is None or not os.path.exists(path):
        _START_AFTER[0] = True
        return None
    import _socket

    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        connect_to(conn, path)
        fds = []
        for fd in (0, 1, 2):
            try:
                os.fstat(fd)
            except OSError:
                fd = os.open(os.devnull, os.O_RDWR)  # a closed descriptor reads as /dev/null there
            fds.append(fd)
        rights = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)  # an array of C ints
        conn.sendmsg([_request(argv)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    except OSError:
        conn.close()
        _START_AFTER[0] = True
        return None  # no daemon (a socket left behind by one that died), or it went away: run here
    return _wait(conn)


def receive(conn: object) -> dict[str, Any] | None:
    """The next message on `conn` (a socket); None when it closed (or broke) before one whole came."""
    try:
        head = read_exactly(conn, 4)
        size = int.from_bytes(head, "big")
        if len(head) < 4 or size > MAX_MESSAGE:
            return None
        body = read_exactly(conn, size)
    except OSError:
        return None
    if len(body) < size:
        return None
    try:
        return unpack(body)
    except ValueError:
        return None


def read_exactly(conn: object, n: int) -> bytes:
    """`n` bytes from `conn` (a socket), fewer only when it closes first; OSError as its recv raises it."""
    parts = []
    while n:
        try:
            chunk = conn.recv(min(n, 1 << 20))  # type: ignore[attr-defined]
        except InterruptedError:
            continue
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _wait(conn: object) -> int | None:
    """Pass signals on to the child until the daemon says how it ended."""
    import _signal  # type: ignore[import-not-found]  # signal's C part: no enum tables to build

    child = [0]
    pending: list[int] = []

    def pass_on(signum: int, _frame: object) -> None:
        if child[0]:
            try:
                os.kill(child[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    previous = {}
    for name in _PASSED:
        sig = getattr(_signal, name)
        previous[sig] = _signal.signal(sig, pass_on)
    try:
        while True:
            message = receive(conn)
            if message is None:
                if not child[0]:
                    return None  # the daemon closed before the command started: run it here
                print("error: the layerbuild daemon went away while it ran the command; "
                      "`layerbuild daemon status` says whether it runs", file=sys.stderr)
                return 1
            if "refused" in message:
                if os.environ.get("LAYERBUILD_DEBUG"):
                    print(f"layerbuild daemon: {message['refused']}; running here", file=sys.stderr)
                _START_AFTER[0] = bool(message.get("ending"))  # a newer layerbuild: a new daemon for it
                return None
            if "pid" in message:
                child[0] = int(message["pid"])
                for signum in pending:
                    pass_on(signum, None)
                pending.clear()
            if "exit" in message:
                return int(message["exit"])
            if "signal" in message:
                signum = int(message["signal"])
                for sig, handler in previous.items():
                    _signal.signal(sig, handler)
                try:
                    _signal.signal(signum, _signal.SIG_DFL)
                    sys.stdout.flush()
                    os.kill(os.getpid(), signum)
                except (OSError, ValueError):
                    pass
                return 128 + signum
    finally:
        conn.close()  # type: ignore[attr-defined]
        for sig, handler in previous.items():
            _signal.signal(sig, handler)


def daemon_argv() -> list[str]:
    """The command that runs a daemon of this copy of layerbuild with this interpreter (then its idle
    timeout and, optionally, the descriptor that hears when it is ready). `-P`: no working directory
    on its module path, so no file where a command runs can stand in for a module it imports later."""
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(PACKAGE)!r}); "
            "from layerbuild.cli.daemon import main; main()")
    return [sys.executable, "-P", "-c", code]


def start_detached() -> int | None:
    """Start a daemon in the background without waiting for it; its pid, or None when none was
    started: no private socket directory, one runs or is starting (it holds the lock), or the last
    start failed less than RETRY_FAILED_START ago."""
    import fcntl
    import time

    path = socket_path(create=True)
    if path is None:
        return None
    try:  # a start that failed is not tried again by every command (`daemon start` still tries)
        if time.time() - os.stat(failed_path(path)).st_mtime < RETRY_FAILED_START:
            return None
    except OSError:
        pass
    try:
        lock = open_lock(path)
    except OSError:
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None  # a daemon holds it: it runs, or it is loading layerbuild
    finally:
        os.close(lock)  # (the daemon takes the lock itself; two that race settle it there)
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, log_path(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
    ]
    for name in os.listdir("/proc/self/fd"):  # none of the caller's pipes: whoever waits on them ends
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                actions.append((os.POSIX_SPAWN_CLOSE, fd))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    argv = [*daemon_argv(), repr(IDLE_TIMEOUT)]
    try:
        return os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=actions, setsid=True)
    except OSError:
        return None


def _started_after() -> None:
    """Start a daemon for the commands that follow this one (see the module docstring)."""
    if start_detached() is not None and os.isatty(2):
        print("layerbuild: started a daemon, so later commands start faster (`layerbuild daemon stop` "
              "ends it; LAYERBUILD_DAEMON=0 runs without one)", file=sys.stderr)


def entry() -> None:
    """Console-script entry point: the daemon's child runs the command when it can, else this process
    (which then starts a daemon when none answered)."""
    code = forward(sys.argv[1:])
    if code is not None:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)
    from layerbuild.cli.main import entry as run_here

    run_here(then=_started_after if _START_AFTER[0] else None)
