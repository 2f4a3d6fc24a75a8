"""The resident process: layerbuild imported once, a forked child per command (see `cli.launch`).

One daemon per user, interpreter and copy of layerbuild, on a unix socket in a directory only that
user can reach (`launch.socket_dir`). The parent never runs a command: it accepts a connection,
checks the caller, reads its request (arguments, environment, working directory, umask, limits, and
its standard descriptors passed as SCM_RIGHTS), and forks. The child becomes the caller's process in
every way the command can see (see `_become`) and runs `cli.main.main`; the parent waits for it
through a pidfd and sends the caller its exit status. A caller that goes away gets its command
interrupted (SIGINT, as Ctrl-C would). The parent stays single-threaded, so forking it is safe.

A request is refused (the caller then runs the command itself) when the caller is another user, has
other namespaces, cgroups, groups, capabilities, seccomp or no_new_privs state than the daemon, or
when a file of layerbuild changed since the daemon started; that last one also ends the daemon, as
a newer copy must not be answered by older code.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from layerbuild.cli import launch

IDLE_TIMEOUT = launch.IDLE_TIMEOUT  # seconds without a command before the daemon ends (0: never)
# /proc/PID/status fields that must be the same for the caller and the daemon.
_SAME_STATUS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def _preload() -> None:
    """Import every module of layerbuild (the point of the daemon), and what their first use loads."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages([launch.PACKAGE], "layerbuild."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    from layerbuild.cli import main
    from layerbuild.runtime import seccomp
    from layerbuild.runtime.spec import DEFAULT_CAPABILITIES

    main.prebuild(sorted(launch.FORWARDED))  # each child parses its command with a parser made here

    try:  # the default program of RUN steps and containers: a pure function of the profile,
        # libseccomp and the kernel, kept in memory (the first RUN of a new store compiled it)
        seccomp.compile_profile(None, DEFAULT_CAPABILITIES)
    except Exception:  # no libseccomp: the child reports it as it would
        pass


def _package_walk(package: str) -> Iterator[tuple[str, list[str]]]:
    """Each directory of the package, bytecode caches aside, with its files' names: what `_files`
    compares and `_Watch` watches (the two must cover the same directories)."""
    for top, dirs, names in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        yield top, names


def _files(package: str) -> dict[str, tuple[int, int, int]]:
    """Every file of the package (bytecode caches aside) and the interpreter, by (mtime, size, inode)."""
    out = {}
    for top, names in _package_walk(package):
        for name in names:
            path = os.path.join(top, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[path] = (st.st_mtime_ns, st.st_size, st.st_ino)
    st = os.stat(sys.executable)
    out[sys.executable] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out


# Filesystems whose every change reaches inotify: on a network filesystem a change made by another
# host sends no event, so there `_Watch` is not used and every command walks the files.
_LOCAL_FILESYSTEMS = frozenset(("ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs"))
_IN_EVENTS = (0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800)
# (modify, attrib, close_write, moved_from, moved_to, create, delete, delete_self, move_self)


def _fstype(path: str) -> str | None:
    """The type of the filesystem `path` is on (the longest mount point above it in mountinfo)."""
    real, best, kind = os.path.realpath(path), "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if "-" not in fields:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[fields.index("-") + 1]
    except OSError:
        return None
    return kind


class _Watch:
    """inotify on every directory of the package, the interpreter and its directory: a command
    finds out in a read that returns nothing that none of them changed, instead of a walk of them
    all (224 files: 3.7 ms). Any event only means "walk and compare" (`Daemon._changed`): the walk
    stays what decides."""

    def __init__(self, package: str) -> None:
        import ctypes

        paths = [sys.executable, os.path.dirname(sys.executable), *(top for top, _ in _package_walk(package))]
        if any(_fstype(p) not in _LOCAL_FILESYSTEMS for p in (package, *paths[:2])):
            raise OSError("not on a local filesystem")
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for path in paths:
            if libc.inotify_add_watch(self.fd, os.fsencode(path), _IN_EVENTS) < 0:
                os.close(self.fd)
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")

    def quiet(self) -> bool:
        """True when nothing happened since the last call (what happened is read and dropped)."""
        seen = False
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return not seen
            except BlockingIOError:
                return not seen
            seen = True

    def close(self) -> None:
        os.close(self.fd)


def _status(pid: int | str) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in _SAME_STATUS:
                out[key] = " ".join(value.split())
    return out


def _cgroup(pid: int | str) -> str:
    with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
        return f.read()


def caller_differs(pid: int) -> str | None:
    """Why the process `pid` may not have its command run by a child of this one (None: it may)."""
    try:
        if launch.namespaces(str(pid)) != launch.namespaces():
            return "the caller is in other namespaces"
        theirs, ours = _status(pid), _status("self")
    except OSError:
        return "the caller cannot be inspected"
    for key in _SAME_STATUS:
        if theirs.get(key) != ours.get(key):
            return f"the caller's {key} is not the daemon's"
    try:
        if _cgroup(pid) != _cgroup("self"):
            # Its limits and accounting are the caller's: the command must run where the caller is.
            return "the caller is in another cgroup"
    except OSError:
        return "the caller's cgroup cannot be read"
    return None


@dataclass
class _Child:
    pid: int
    conn: socket.socket
    pidfd: int
    verb: str
    started: float = field(default_factory=time.monotonic)
    hung_up: bool = False


@dataclass
class Daemon:
    """The accepting loop (see the module docstring)."""

    path: str
    idle_timeout: float = IDLE_TIMEOUT
    package: str = launch.PACKAGE
    children: dict[int, _Child] = field(default_factory=dict)
    served: int = 0
    refused: int = 0
    started: float = field(default_factory=time.time)
    stopping: bool = False

    def serve(self, listener: socket.socket, lock_fd: int) -> None:
        self.listener, self.lock_fd = listener, lock_fd
        self.inode = os.stat(self.path).st_ino
        try:  # before the files are read: a change after this is an event
            self.watch: _Watch | None = _Watch(self.package)
        except OSError:
            self.watch = None
        self.files = _files(self.package)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        # A signal's handler runs between waits: the wake-up byte makes the wait return to see it.
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        last = time.monotonic()
        signal.signal(signal.SIGTERM, lambda *_: self._stop())
        signal.signal(signal.SIGINT, lambda *_: self._stop())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while not (self.stopping and not self.children):
            timeout = None
            if self.idle_timeout > 0 and not self.children and not self.stopping:
                timeout = max(0.0, last + self.idle_timeout - time.monotonic())
            events = self.selector.select(timeout)
            if not events and timeout is not None and not self.children:
                self._stop()  # idle long enough
                continue
            for key, _mask in events:
                try:
                    last = self._event(key.data, last)
                except Exception:  # a fault in one answer must not end the daemon: into its log
                    import traceback

                    traceback.print_exc()
        self.selector.close()
        if self.watch is not None:
            self.watch.close()
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _event(self, what: Any, last: float) -> float:
        """Handle one readiness event; the time of the last command's start or end."""
        if what == "wake":
            try:
                os.read(self.wake_r, 4096)
            except BlockingIOError:
                pass
        elif what == "accept":
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return last
            self._accept(conn)
            return time.monotonic()
        elif what[0] == "exit":
            self._reap(what[1])
            return time.monotonic()
        else:
            self._hung_up(what[1])
        return last

    def _changed(self) -> bool:
        """Whether a file of layerbuild or the interpreter changed since the daemon started."""
        if self.watch is not None and self.watch.quiet():
            return False
        return _files(self.package) != self.files

    def _stop(self) -> None:
        """Take no more commands; the running ones finish and are answered."""
        if self.stopping:
            return
        self.stopping = True
        try:
            self.selector.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        try:  # the socket file, unless another daemon has put its own there since
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        self.listener.close()

    def _accept(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            peer_pid, peer_uid, _gid = struct.unpack("3i", creds)
            if peer_uid != os.getuid():
                conn.close()  # not our user's (the directory's mode should already have said no)
                return
            request, fds = _receive(conn)
        except (OSError, ValueError) as exc:
            _send(conn, {"refused": f"a bad request: {exc}"})
            conn.close()
            return
        try:
            self._answer(conn, peer_pid, request, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _answer(self, conn: socket.socket, peer_pid: int, request: dict[str, Any], fds: list[int]) -> None:
        control = request.get("control")
        if control is not None:
            if control == "status":
                _send(conn, {"pid": os.getpid(), "served": self.served, "refused": self.refused,
                             "running": len(self.children), "started": self.started, "socket": self.path,
                             "identity": launch.identity()})
            elif control == "stop":
                _send(conn, {"stopping": True, "running": len(self.children)})
                self._stop()
            conn.close()
            return
        why, ending = None, False
        if request.get("identity") != launch.identity():
            why = "the caller is another installation of layerbuild"
        elif len(fds) != 3:
            why = "the caller's standard descriptors did not come"
        elif self._changed():
            why, ending = "layerbuild's files changed since the daemon started", True
            self._stop()
        elif self.stopping:
            why = "the daemon is stopping"
        else:
            why = caller_differs(peer_pid)
        if why is not None:
            self.refused += 1
            _send(conn, {"refused": why, "ending": True} if ending else {"refused": why})
            conn.close()
            return
        pid = os.fork()
        if pid == 0:  # the child: never returns into this loop
            code = 70
            try:
                code = self._child(conn, request, fds)
            finally:
                os._exit(code)
        self.served += 1
        pidfd = os.pidfd_open(pid)
        child = _Child(pid, conn, pidfd, str(launch.verb_of(request.get("argv") or [])[0]))
        self.children[pid] = child
        conn.setblocking(False)
        self.selector.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        self.selector.register(conn, selectors.EVENT_READ, ("conn", pid))

    def _child(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> int:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        for other in self.children.values():  # closing copies: the parent's registrations stay
            os.close(other.pidfd)
            other.conn.close()
        self.selector.close()
        self.listener.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.close(self.lock_fd)
        if self.watch is not None:
            self.watch.close()
        os.setsid()
        why = _become(request, fds)
        if why is not None:
            _send(conn, {"refused": why})
            return 0
        conn.setblocking(True)
        _send(conn, {"pid": os.getpid()})
        conn.close()
        from layerbuild.cli.main import main

        return _finish(main(request["argv"]))

    def _reap(self, pid: int) -> None:
        child = self.children.pop(pid)
        self.selector.unregister(child.pidfd)
        if not child.hung_up:
            self.selector.unregister(child.conn)
        os.close(child.pidfd)
        _, status, usage = os.wait4(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        _log_command(child, code, usage)
        conn = child.conn
        conn.setblocking(True)
        conn.settimeout(5.0)
        _send(conn, {"exit": code} if code >= 0 else {"signal": -code})
        conn.close()

    def _hung_up(self, pid: int) -> None:
        child = self.children.get(pid)
        if child is None:
            return
        try:
            data = child.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the caller went away: interrupt its command, as its Ctrl-C would
            self.selector.unregister(child.conn)
            child.hung_up = True
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass


def _log_command(child: _Child, code: int, usage: Any) -> None:
    """One line on the daemon's standard error (its log) per command it ran: the verb only (never its
    arguments, which may hold secrets), how it ended, its wall and CPU time, and the peak resident
    memory of its process (or of the largest it waited for: a RUN step's, a helper's), which counts
    the daemon's pages it inherited, as a command's own process counts the modules it imports."""
    ended = f"exit {code}" if code >= 0 else f"signal {-code}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        print(f"{stamp} pid {child.pid} {child.verb}: {ended}, {time.monotonic() - child.started:.3f} s, "
              f"CPU {usage.ru_utime + usage.ru_stime:.3f} s, peak RSS {usage.ru_maxrss / 1024:.1f} MiB",
              file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # a log that cannot be written costs the line, never the answer


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The request (see `launch`) and the descriptors that came with it."""
    fds: list[int] = []
    head, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(3 * 4))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    try:
        if len(head) < 4:
            head += _exactly(conn, 4 - len(head))
        (size,) = struct.unpack("!I", head)
        if size > launch.MAX_MESSAGE:
            raise ValueError(f"{size} bytes")
        request = launch.unpack(_exactly(conn, size))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def _exactly(conn: socket.socket, n: int) -> bytes:
    data = launch.read_exactly(conn, n)
    if len(data) < n:
        raise ValueError("the request ended early")
    return data


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(launch.pack(message))
    except OSError:
        pass  # the caller has gone: nobody to tell


def _become(request: dict[str, Any], fds: list[int]) -> str | None:
    """Make this child the caller's process as the command sees it; why not, if it cannot."""
    import resource

    for name, (soft, hard) in request.get("limits", {}).items():
        which = getattr(resource, name, None)
        if which is None or resource.getrlimit(which) == (soft, hard):
            continue
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError):
            return f"the caller's {name} ({soft}, {hard}) cannot be set here"
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        return f"the caller's working directory cannot be entered ({exc.strerror})"
    os.umask(int(request.get("umask", 0o022)))
    env = request.get("env", {})
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    import tempfile

    tempfile.tempdir = None  # read again from this environment's TMPDIR
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    _new_stdio()
    import atexit

    atexit._clear()  # the daemon's callbacks are not this command's
    sys.argv = ["layerbuild", *request["argv"]]
    return None


def _new_stdio() -> None:
    """Fresh sys.stdin/stdout/stderr over descriptors 0, 1 and 2 (now the caller's), buffered as the
    interpreter would have buffered them at its start."""
    import io

    def text(fd: int, mode: str, line: bool) -> io.TextIOWrapper:
        raw = io.FileIO(fd, mode, closefd=False)
        buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
        encoding = (sys.stdout.encoding if sys.stdout else None) or "utf-8"
        errors = "strict" if fd != 2 else "backslashreplace"
        return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, line_buffering=line,
                                write_through=fd == 2)

    sys.stdin = text(0, "r", False)
    sys.stdout = text(1, "w", os.isatty(1))
    sys.stderr = text(2, "w", True)


def _finish(code: int) -> int:
    """End the command as the interpreter's exit would: its threads joined, its atexit callbacks
    run, its output flushed; then the child's exit code."""
    import atexit
    import threading

    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return code


def start(idle_timeout: float = IDLE_TIMEOUT, *, ready: int | None = None) -> int:
    """Run the daemon in this process until it stops; `ready` (a descriptor) hears one line once it
    accepts commands. Returns an exit code: 0 after a stop, 1 when it cannot start."""
    path = launch.socket_path(create=True)
    if path is None:
        _tell(ready, {"error": "no private directory for the daemon's socket (it must be the user's own, mode 0700)"})
        return 1
    lock_fd = launch.open_lock(path)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        _tell(ready, {"error": "a daemon already runs", "socket": path})
        os.close(lock_fd)
        return 1
    import gc

    _preload()
    gc.collect()
    gc.freeze()  # what is loaded now is never garbage: no child's collection walks (and copies) it
    if _threads() > 1:
        _failed(path, ready, "loading layerbuild started a thread: the daemon cannot fork safely")
        return 1
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temp = f"{path}.{os.getpid()}.new"
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    launch.connect_to(listener, temp, bind=True)
    os.chmod(temp, 0o600)
    listener.listen(128)
    os.replace(temp, path)
    try:
        os.unlink(launch.failed_path(path))
    except FileNotFoundError:
        pass
    daemon = Daemon(path, idle_timeout)
    _tell(ready, {"pid": os.getpid(), "socket": path})
    daemon.serve(listener, lock_fd)
    os.close(lock_fd)
    return 0


def _failed(path: str, ready: int | None, why: str) -> None:
    """A start that failed: `why` goes to whoever waits on `ready`, and beside the socket, so the
    commands that follow do not each try again (see `launch.start_detached`)."""
    _tell(ready, {"error": why})
    try:
        with open(launch.failed_path(path), "w", encoding="utf-8") as f:
            f.write(why + "\n")
    except OSError:
        pass


def _threads() -> int:
    import threading

    return threading.active_count()


def _tell(fd: int | None, message: dict[str, Any]) -> None:
    if fd is None:
        return
    try:
        os.write(fd, json.dumps(message).encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def control(what: str, path: str | None = None) -> dict[str, Any] | None:
    """Ask the running daemon (`status`, `stop`): this installation's, or the one at the socket
    `path`; None when none answers."""
    path = path or launch.socket_path()
    if path is None:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10.0)
    try:
        launch.connect_to(conn, path)
        conn.sendall(launch.pack({"control": what}))
        return launch.receive(conn)
    except OSError:
        return None
    finally:
        conn.close()


def others() -> list[dict[str, Any]]:
    """The status of every other daemon of this user that answers in the socket directory: those of
    other installations (another interpreter or copy of layerbuild), which this one's commands never
    go to."""
    folder, own = launch.socket_dir(), launch.socket_path()
    if folder is None:
        return []
    found = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.startswith("daemon-") and name.endswith(".sock") and path != own:
            status = control("status", path)
            if status is not None:
                found.append(status)
    return found


def main() -> None:
    """`python -m layerbuild.cli.daemon [IDLE_TIMEOUT [READY_FD]]`: what `layerbuild daemon start` runs."""
    idle = float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_TIMEOUT
    ready = int(sys.argv[2]) if len(sys.argv) > 2 else None
    os.chdir("/")  # no caller's directory kept busy (each child enters its caller's)
    try:
        code = start(idle, ready=ready)
    except Exception as exc:
        why, path = f"{type(exc).__name__}: {exc}", launch.socket_path()
        if path is None:
            _tell(ready, {"error": why})
        else:
            _failed(path, ready, why)
        raise
    os._exit(code)


if __name__ == "__main__":
    main()
