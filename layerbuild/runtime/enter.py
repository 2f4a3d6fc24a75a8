"""`exec`: a new process in a running container, under the container's own confinement: its cgroup,
its namespaces (mount, UTS, IPC, network, PID, and the user namespace of a rootless one), its root,
the capability bounding set, seccomp filter and no_new_privs of its process, its user (with the
groups /etc/group gives that user), working directory and environment. nsinit's "enter" mode does
the syscalls; with `tty` the process gets a pty of the container's devpts, relayed to the caller's
terminal as `run -t` relays one.
"""

from __future__ import annotations

import contextlib
import io
import marshal
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from layerbuild.errors import UsageError
from layerbuild.runtime.containers import Container, apply_env
from layerbuild.runtime.spec import SandboxError, helper_argv

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _ids(c: Container, user: str) -> tuple[int, int] | None:
    """`user` (name or uid, optionally :group) as numbers, from the container's own /etc/passwd."""
    if not user:
        return None
    name, _, group = user.partition(":")
    root = Path(f"/proc/{c.pid}/root")

    def look(path: str, key: str, want: int) -> int | None:
        if key.isdigit():
            return int(key)
        try:
            for line in (root / path).read_text().splitlines():
                fields = line.split(":")
                if len(fields) > want and fields[0] == key:
                    return int(fields[want])
        except OSError:
            pass
        return None

    uid = look("etc/passwd", name, 2)
    if uid is None:
        raise UsageError(f"unable to find user {name}: no matching entries in passwd file")
    gid = look("etc/group", group, 2) if group else None
    if gid is None and not group:
        gid = look("etc/passwd", name, 3) if not name.isdigit() else 0
    if gid is None:
        raise UsageError(f"unable to find group {group}: no matching entries in group file")
    return uid, gid


def _groups(c: Container, uid: int, gid: int, user: str) -> list[int]:
    """The primary gid and, for a user given by name (or the uid's passwd name), the groups of the
    container's /etc/group that list it, as docker's exec sets them."""
    name = user.partition(":")[0]
    if user.partition(":")[2]:
        return [gid]
    root = Path(f"/proc/{c.pid}/root")
    try:
        if name.isdigit() or not name:
            name = next((f[0] for f in (line.split(":") for line in (root / "etc/passwd").read_text().splitlines())
                         if len(f) > 2 and f[2] == str(uid)), "")
        extra = [int(f[2]) for f in (line.split(":") for line in (root / "etc/group").read_text().splitlines())
                 if len(f) > 3 and f[2].isdigit() and name and name in f[3].split(",")]
    except (OSError, ValueError):
        extra = []
    return list(dict.fromkeys([gid, *extra]))


def _home(c: Container, uid: int) -> str:
    try:
        for line in Path(f"/proc/{c.pid}/root/etc/passwd").read_text().splitlines():
            f = line.split(":")
            if len(f) > 5 and f[2] == str(uid):
                return f[5] or "/"
    except OSError:
        pass
    return "/"


def payload(c: Container, argv: Sequence[str], *, env: Sequence[str] = (), user: str | None = None,
            workdir: str | None = None, tty: bool = False) -> dict[str, Any]:
    """What nsinit's "enter" mode needs to run `argv` in `c`."""
    from layerbuild.runtime import cgroups
    from layerbuild.runtime.runner import parse_security_opts
    from layerbuild.runtime.sandbox import security
    from layerbuild.runtime.spec import ProcessSpec
    from layerbuild.store.layout import Layout

    if not c.running():
        raise UsageError(f"container {c.name} is not running", hint="start it first")
    if not argv:
        raise UsageError("exec needs a command")
    who = (c.config.get("user") or "") if user is None else user
    uid, gid = _ids(c, who) or (0, 0)
    environ = dict(e.partition("=")[::2] for e in c.config.get("env", []))
    environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    environ.setdefault("HOSTNAME", c.config.get("hostname") or c.short_id)
    environ.setdefault("HOME", _home(c, uid))
    if tty:
        environ.setdefault("TERM", "xterm")
    apply_env(environ, env)
    root = c.dir.parent.parent
    spec = ProcessSpec(argv=tuple(argv), **parse_security_opts(c.config.get("security_opt", [])))
    cgroup = cgroups.Cgroup.from_json(c.cgroup)
    groups = _groups(c, uid, gid, who)
    rootless = os.readlink(f"/proc/{c.pid}/ns/user") != os.readlink("/proc/self/ns/user")
    return {**security(spec, Layout(root).seccomp), "enter": c.pid, "userns": rootless, "tty": tty,
            "cgroup_join": cgroup.join_files() if cgroup is not None else [],
            "process": {"argv": list(argv), "env": [f"{k}={v}" for k, v in environ.items()],
                        "cwd": workdir or c.config.get("workdir") or "/", "uid": uid, "gid": gid,
                        "groups": None if rootless and _single_mapping(c) else groups}}


def _single_mapping(c: Container) -> bool:
    """Whether the rootless container maps only one id (setgroups is denied in its namespace)."""
    try:
        return Path(f"/proc/{c.pid}/setgroups").read_text().strip() == "deny"
    except OSError:
        return True


def exec_in(c: Container, argv: Sequence[str], *, env: Sequence[str] = (), user: str | None = None,
            workdir: str | None = None, stdin: int | IO[Any] | None = None, stdout: int | IO[Any] | None = None,
            stderr: int | IO[Any] | None = None, timeout: float | None = None, tty: bool = False,
            forward_signals: bool = False) -> int:
    """Run `argv` in `c` to its end; its exit code (124 after `timeout`, as timeout(1) reports it;
    126 not executable, 127 not found, as docker's). With `tty`, the caller's terminal (stdin and
    stdout) is relayed to the process's pty, in raw mode. With `forward_signals` (a CLI's foreground
    exec), the signals the caller gets go to the process."""
    from layerbuild.runtime import terminal
    from layerbuild.runtime.sandbox import NSINIT

    data = payload(c, argv, env=env, user=user, workdir=workdir, tty=tty)
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    console = terminal.console_pair() if tty else None
    # Without a pty, the process never gets the caller's terminal itself (docker's exec -T gives it
    # pipes): a terminal among our stdio is relayed through a pipe.
    piped = [] if tty else [fd for fd, given in ((0, stdin), (1, stdout), (2, stderr))
                            if given is None and _isatty(fd)]
    stdio = [subprocess.PIPE if fd in piped else given for fd, given in ((0, stdin), (1, stdout), (2, stderr))]
    try:
        proc = subprocess.Popen(helper_argv(NSINIT, str(spec_r), str(status_w)),
                                pass_fds=(spec_r, status_w), stdin=console[1].fileno() if console else stdio[0],
                                stdout=stdio[1], stderr=stdio[2])
    finally:
        os.close(spec_r)
        os.close(status_w)
        if console is not None:
            console[1].close()
    with os.fdopen(spec_w, "wb") as f:
        f.write(marshal.dumps(data))
    status = os.fdopen(status_r, "rb")
    previous = {}
    try:
        if forward_signals and threading_main():
            previous = {sig: signal.signal(sig, lambda signum, _f: proc.send_signal(signum)) for sig in _FORWARDED}
        error = None
        pumps = _pumps(proc, piped)
        if console is not None:
            error = _until_ready(status)
            fd = terminal.receive_master(console[0]) if error is None else None
            console[0].close()
            if fd is not None:
                master = io.FileIO(fd, "r+")
                with master, terminal.follow_size(terminal.terminal_fd(1, 0), fd), \
                        terminal.raw_mode(terminal.terminal_fd(0)):
                    terminal.relay(fd, 0 if stdin is None else None, 1)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_process(status)  # it is in the container's PID namespace: killing the helper leaves it
            proc.kill()
            proc.wait()
            return 124
        for pump in pumps:
            pump.join()
        rest = error or _error(status)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        status.close()
    if rest is not None and rest[0] not in ("exec",):
        raise SandboxError(f"cannot exec in container {c.name}: {rest[1]}")
    return code if code >= 0 else 128 - code


def _kill_process(status: IO[bytes]) -> None:
    """SIGKILL the exec'd process, whose pid the helper reported on `status` (read without waiting)."""
    os.set_blocking(status.fileno(), False)
    try:
        data = os.read(status.fileno(), 65536)
    except (BlockingIOError, OSError):
        return
    for line in data.decode("utf-8", "replace").splitlines():
        word, _, rest = line.partition(" ")
        if word == "pid" and rest.strip().isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(rest), signal.SIGKILL)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _pumps(proc: subprocess.Popen[bytes], piped: list[int]) -> list[Any]:
    """Threads copying between our terminal fds and the process's pipes; those of its output to join."""
    import threading

    def out(src: IO[bytes], fd: int) -> None:
        while data := os.read(src.fileno(), 65536):
            while data:
                data = data[os.write(fd, data):]
        src.close()

    def feed(dst: IO[bytes]) -> None:
        try:
            while data := os.read(0, 65536):
                dst.write(data)
                dst.flush()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.close()

    joined = []
    for fd in piped:
        if fd == 0 and proc.stdin is not None:
            threading.Thread(target=feed, args=(proc.stdin,), daemon=True).start()  # blocks on our stdin
        elif fd in (1, 2):
            src = proc.stdout if fd == 1 else proc.stderr
            if src is not None:
                t = threading.Thread(target=out, args=(src, fd), daemon=True)
                t.start()
                joined.append(t)
    return joined


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _until_ready(status: IO[bytes]) -> tuple[str, str] | None:
    """Read status lines up to `ready` (the pty's master was sent by then); an error's (stage, message)."""
    for line in iter(status.readline, b""):
        word, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
        if word == "ready":
            return None
        if word == "error":
            stage, _, more = rest.partition(" ")
            return stage, more.partition(" ")[2]
    return ("setup", "the exec helper ended before the process started")


def _error(status: IO[bytes]) -> tuple[str, str] | None:
    for line in iter(status.readline, b""):
        word, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
        if word == "error":
            stage, _, more = rest.partition(" ")
            return stage, more.partition(" ")[2]
    return None
