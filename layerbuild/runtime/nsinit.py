"""In-namespace entry point: unshare, mount the rootfs, pivot_root and exec the process (stdlib only).

Run as `python -I -S` with `main()` reading `SPEC_FD STATUS_FD` (`spec.helper_argv`, which imports it
from its cached bytecode). It is started for every RUN step and every `layerbuild run`, so it imports
nothing of layerbuild and nothing slow (no json, no enum-based modules): the spec arrives as a marshal'd dict on SPEC_FD, and progress goes back as text lines on
STATUS_FD: `pid N` once the process exists, `error STAGE CODE MESSAGE` if it could not start,
`exit CODE` when it ended. The process itself is PID 1 of a new PID namespace; this helper stays
outside it, forwards signals to it, and reports its status (128+N for a signal, like a shell).
With `tty` (`run -t`), stdin is the console socket: the process makes its own pty and sends the
master there before it reports `ready` (`setup_terminal`).
Rootless with subordinate ids (spec "idmap"), a process forked before the user namespace is made
runs newuidmap/newgidmap on this helper once it has unshared, and the helper waits for it.
For the default network it also starts slirp4netns and reports its pid as `net N`.
With spec "join" ({"user": PATH or None, "net": PATH}) the process enters an existing network
namespace (and, rootless, the user namespace that owns it) instead of making its own: the shared
namespace of a rootless compose project (`sharedns.py`). With spec "hold" this helper makes only
that user and network namespace, brings loopback up, reports `pid N` and `ready`, and then does
nothing but keep them alive until it is killed.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # `signal` would pull in enum: slow to import
import ctypes
import marshal
import os
import sys

TYPE_CHECKING = False  # `typing` is not imported at run time, for start-up speed
if TYPE_CHECKING:
    from typing import Any

    Spec = dict[str, Any]

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 24, 22, 38
SECCOMP_MODE_FILTER = 2
# mount_setattr(2): the same number on every architecture; AT_RECURSIVE reaches every submount.
_MOUNT_SETATTR, AT_RECURSIVE = 442, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NODEV = 0x1, 0x4
CAP_MKNOD = 27
# statvfs flag bits that a remount must keep: in a user namespace they are locked, and dropping
# one makes the remount fail with EPERM.
_LOCKED = ((0x2, MS_NOSUID), (0x4, MS_NODEV), (0x8, MS_NOEXEC), (0x1, MS_RDONLY))
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217, "armv7l": 218}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Docker's defaults: hidden (an empty read-only tmpfs on a directory, /dev/null on a file) ...
MASKED = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
          "/sys/devices/virtual/powercap")
# ... and read-only.
READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGCONT", "SIGALRM")

_libc = ctypes.CDLL(None, use_errno=True)
READY_TIMEOUT = 60  # seconds slirp4netns may take to connect the namespace; it needs a few ms
NETWORK: Network | None = None  # the default network's helper, once main() started it


class SetupError(Exception):
    def __init__(self, stage: str, code: int, message: str) -> None:
        super().__init__(message)
        self.stage, self.code, self.message = stage, code, message


def _check(result: int, what: str, stage: str = "setup") -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SetupError(stage, 125, f"{what}: {os.strerror(err)} (errno {err})")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None,
          stage: str = "setup") -> None:
    enc = [None if s is None else os.fsencode(s) for s in (src, target, fstype, data)]
    _check(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]),
           f"mount {fstype or 'bind'} on {target}", stage)


def remount_ro(target: str) -> None:
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY
    have = os.statvfs(target).f_flag
    for bit, ms in _LOCKED:
        if have & bit:
            flags |= ms
    mount(None, target, None, flags)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def restrict(target: str, readonly: bool, nodev: bool = True) -> None:
    """Make the mount at `target` and every mount below it nodev (and read-only): a bind of a host
    directory must not bring a devtmpfs, or any other mount where device nodes open, along."""
    attr = _MountAttr((MOUNT_ATTR_NODEV if nodev else 0) | (MOUNT_ATTR_RDONLY if readonly else 0), 0, 0, 0)
    if not attr.attr_set:
        return
    result = _libc.syscall(_MOUNT_SETATTR, -100, os.fsencode(target), AT_RECURSIVE,
                           ctypes.byref(attr), ctypes.sizeof(attr))
    if result == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS: a kernel before 5.12 remounts the top mount instead
        _check(result, f"restrict the mount on {target}")
    flags = MS_BIND | MS_REMOUNT | (MS_NODEV if nodev else 0) | (MS_RDONLY if readonly else 0)
    have = os.statvfs(target).f_flag
    for bit, ms in _LOCKED:
        if have & bit:
            flags |= ms
    mount(None, target, None, flags)


def bind(src: str, target: str, readonly: bool, nodev: bool = True) -> None:
    mount(src, target, None, MS_BIND | MS_REC)
    restrict(target, readonly, nodev)


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def loopback_up() -> None:
    import _socket
    import fcntl

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = bytearray(b"lo".ljust(40, b"\0"))
        fcntl.ioctl(sock.fileno(), 0x8913, ifreq)  # SIOCGIFFLAGS
        flags = int.from_bytes(ifreq[16:18], sys.byteorder) | 0x1 | 0x40  # IFF_UP | IFF_RUNNING
        ifreq[16:18] = flags.to_bytes(2, sys.byteorder)
        fcntl.ioctl(sock.fileno(), 0x8914, ifreq)  # SIOCSIFFLAGS
    finally:
        sock.close()


def setup_dev(dev: str, rootful: bool, privileged: bool) -> None:
    # /dev is nodev too: the allowed devices are binds of the host's nodes, each its own mount where
    # nodes open, so a node that root makes in /dev (or anywhere else) cannot be opened.
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | (0 if privileged else MS_NODEV), "mode=755,size=65536k")
    for name in DEVICES:
        path = f"{dev}/{name}"
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o666))
        mount(f"/dev/{name}", path, None, MS_BIND)
    os.mkdir(f"{dev}/pts", 0o755)
    os.mkdir(f"{dev}/shm", 0o1777)
    os.chmod(f"{dev}/shm", 0o1777)
    pts_opts = "newinstance,ptmxmode=0666,mode=0620" + (",gid=5" if rootful else "")
    mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_opts)
    mount("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def make_dev_point(target: str, path: str, is_file: bool) -> None:
    """A mount under /dev lands in the fresh tmpfs made above, not in the image: create its missing
    mount point there (as runc does), one component at a time and never through a symlink."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2 or parts[0] != "dev":
        return
    here = target
    for i, part in enumerate(parts):
        here = f"{here}/{part}"
        if os.path.islink(here):
            raise SetupError("setup", 125, f"cannot mount at {path}: {part} is a symlink")
        if os.path.lexists(here):
            continue
        if i == len(parts) - 1 and is_file:
            os.close(os.open(here, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644))
        else:
            os.mkdir(here, 0o755)


def setup_proc(proc: str) -> None:
    mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def setup_sys(sys_dir: str, privileged: bool) -> None:
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY)
    try:
        mount("sysfs", sys_dir, "sysfs", flags)
    except SetupError:  # a user namespace that does not own the network namespace: the host's, read-only
        bind("/sys", sys_dir, not privileged)


def mask_paths(target: str) -> None:
    """As Docker does: files that leak host details hidden, kernel knobs read-only."""
    for path in MASKED:
        full = target + path
        if os.path.isdir(full):
            mount("tmpfs", full, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0,mode=555")
        elif os.path.exists(full):
            mount("/dev/null", full, None, MS_BIND)
    for path in READONLY:
        full = target + path
        if os.path.exists(full):
            bind(full, full, True)


def load_seccomp(program: bytes) -> None:
    """Install a compiled filter (struct sock_filter[], 8 bytes each) for this process and its children."""
    buf = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "load the seccomp filter")


def mount_rootfs(spec: Spec, target: str) -> None:
    root = spec["rootfs"]
    nodev = 0 if spec["privileged"] else MS_NODEV  # an image's device nodes must not open
    if root["mode"] == "bind":
        bind(root["dir"], target, False, bool(nodev))
        return
    # Lower paths relative to their common parent keep the option string under the page-size limit.
    os.chdir(root["base"])
    opts = f"lowerdir={':'.join(root['lowers'])},upperdir={root['upper']},workdir={root['work']}"
    extras = ",userxattr" if spec["userns"] else ",index=off,redirect_dir=off,metacopy=off"
    try:
        mount("overlay", target, "overlay", nodev, opts + extras, stage="overlay")
    except SetupError:
        mount("overlay", target, "overlay", nodev, opts, stage="overlay")


def pivot(target: str) -> None:
    os.chdir(target)
    number = _PIVOT_ROOT.get(os.uname().machine)
    # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves no way back.
    if number is not None and _libc.syscall(number, b".", b".") == 0:
        _check(_libc.umount2(b".", MNT_DETACH), "detach the old root")
    else:  # e.g. an initramfs root, which cannot be pivoted away from
        mount(target, "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")


def drop_capabilities(keep: list[int] | tuple[int, ...]) -> None:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            last = int(f.read())
    except OSError:
        last = 40
    for cap in range(last + 1):
        if cap not in keep:
            _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")


def child(spec: Spec, status: int) -> None:
    """PID 1 of the new namespaces: build the root, become the user and exec. Never returns."""
    try:
        if spec["die_with_parent"]:
            _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        if not spec["tty"]:  # (with a tty, setup_terminal does it) a session of its own, without a
            os.setsid()  # controlling terminal: the caller's terminal is no /dev/tty and takes no TIOCSTI
        _check(_libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        target = spec["target"]
        mount_rootfs(spec, target)
        for op in spec["mounts"]:
            kind, dest = op[0], target + op[1]
            if kind == "proc":
                setup_proc(dest)
            elif kind == "dev":
                setup_dev(dest, not spec["userns"], spec["privileged"])
            elif kind == "sys":
                setup_sys(dest, spec["privileged"])
            elif kind == "bind":
                make_dev_point(target, op[1], not os.path.isdir(op[2]))
                bind(op[2], dest, op[3])
            elif kind == "tmpfs":
                make_dev_point(target, op[1], False)
                mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV, op[2])
        if not spec["privileged"]:
            mask_paths(target)
        if spec["netns"]:
            loopback_up()
        name = spec["hostname"].encode()
        _check(_libc.sethostname(name, len(name)), "set the hostname")
        if NETWORK is not None:
            NETWORK.wait_ready()
        if spec.get("go_fd") is not None:
            wait_attached(spec["go_fd"])
        if spec["tty"]:
            import_terminal_modules()  # after pivot_root nothing can be imported
        pivot(target)
        if spec["tty"]:
            setup_terminal(spec["process"]["uid"])
        caps = spec["capabilities"]
        if caps is not None:
            drop_capabilities(caps)
        proc = spec["process"]
        if spec["seccomp"] and not spec["no_new_privs"]:  # still privileged enough to load it unflagged
            load_seccomp(spec["seccomp"])
        if not spec["userns"] or spec.get("idmap"):  # denied with the single-id mapping
            os.setgroups(proc["groups"])
        os.setresgid(proc["gid"], proc["gid"], proc["gid"])
        os.setresuid(proc["uid"], proc["uid"], proc["uid"])
        cwd = proc["cwd"]
        try:
            os.chdir(cwd)
        except FileNotFoundError:
            os.makedirs(cwd, 0o755)  # docker creates a missing working directory too
            os.chdir(cwd)
        if spec["no_new_privs"]:  # setuid binaries and file capabilities grant nothing from here on
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
        if spec["seccomp"] and spec["no_new_privs"]:  # last: the filter need not allow the setup above
            load_seccomp(spec["seccomp"])
    except Exception as exc:  # after pivot_root nothing can be imported: report, never raise
        fail(status, exc)
    start_process(proc, status)


def start_process(proc: dict[str, Any], status: int) -> None:
    """Say `ready` and exec the process (`run` and `exec` alike): its environment, the signals Python
    and the tty mode changed back to their defaults, and docker's 127/126 when it cannot start."""
    env = dict(e.split("=", 1) if "=" in e else (e, "") for e in proc["env"])
    for name in ("SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT"):
        _signal.signal(getattr(_signal, name), _signal.SIG_DFL)
    argv = proc["argv"]
    os.write(status, b"ready\n")
    try:
        execute(argv, env)
    except FileNotFoundError:
        fail(status, SetupError("exec", 127, f'exec: "{argv[0]}": executable file not found in $PATH'))
    except OSError as exc:
        fail(status, SetupError("exec", 126, f'exec: "{argv[0]}": {exc.strerror}'))


def wait_attached(fd: int) -> None:
    """Project networks: the caller plugs this namespace into their bridges (a veth pair each) once
    it knows our pid, and writes one byte when done; EOF means it could not."""
    ok = os.read(fd, 1)
    os.close(fd)
    if not ok:
        raise SetupError("network", 125, "the container could not be connected to its networks")


def import_terminal_modules() -> None:
    import _socket  # noqa: F401
    import fcntl  # noqa: F401
    import termios  # noqa: F401


def setup_terminal(uid: int, console: bool = True) -> None:
    """`run -t`: a new pty of the container's devpts becomes this process's controlling terminal and
    stdio (and /dev/console), and its master goes to the caller over the console socket on fd 0."""
    import _socket
    import fcntl
    import termios

    master, slave = os.openpty()  # /dev/ptmx is the container's own devpts instance by now
    for fd in (1, 2):  # the caller's size (stdout's first, as docker), so the first `stty size` is right
        try:
            size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)
        break
    sock = _socket.socket(fileno=0)
    try:
        fds = master.to_bytes(4, sys.byteorder)
        sock.sendmsg([b"m"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    finally:
        sock.detach()
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    try:
        os.fchown(slave, uid, -1)  # as runc does, so that a non-root user can reopen /dev/tty
    except OSError:
        pass
    try:
        if console:  # (not for exec: /dev/console is the container's)
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            mount(os.ttyname(slave), "/dev/console", None, MS_BIND)
    except (OSError, SetupError):
        pass  # nice to have: the terminal itself works without it
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def is_socket(fd: int) -> bool:
    try:
        return os.fstat(fd).st_mode & 0o170000 == 0o140000  # S_IFSOCK, without importing stat
    except OSError:
        return False


def keep_console() -> Any:
    """Detached `run -t`: nobody is there to relay the pty, so this helper keeps its master (the
    container's terminal stays open, as with `docker run -dit`) and copies its output to stdout,
    the container's log. Returns our end of a console socket whose other end is now fd 0."""
    import _socket

    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    os.dup2(theirs.fileno(), 0)
    theirs.close()
    return ours


def log_terminal(console: Any) -> None:
    """Receive the master from the child, then copy what the container writes to stdout until every
    process holding the pty has ended (EIO)."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)  # our copy of the child's end: without it, a child that fails gives EOF here
    os.close(null)
    _, ancdata, _, _ = console.recvmsg(1, 64)
    console.close()
    masters = [int.from_bytes(data[i:i + 4], sys.byteorder) for _, _, data in ancdata
               for i in range(0, len(data) - 3, 4)]
    for master in masters:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            try:
                while data:
                    data = data[os.write(1, data):]
            except OSError:
                pass
        os.close(master)


def execute(argv: list[str], env: dict[str, str]) -> None:
    """execvpe without os.get_exec_path, whose lazy `import warnings` cannot work after pivot_root."""
    if "/" in argv[0]:
        os.execve(argv[0], argv, env)
    denied: OSError | None = None
    for directory in env.get("PATH", "").split(":"):
        try:
            os.execve(os.path.join(directory or ".", argv[0]), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as exc:  # keep looking, as execvp does, but report it if nothing else runs
            denied = exc
    if denied is not None:
        raise denied
    raise FileNotFoundError(argv[0])


def fail(status: int, exc: Exception) -> None:
    if not isinstance(exc, SetupError):
        exc = SetupError("setup", 125, str(exc))
    text = exc.message.replace("\n", " ")
    os.write(status, f"error {exc.stage} {exc.code} {text}\n".encode())
    if exc.stage == "exec":
        os.write(2, f"layerbuild: {text}\n".encode())
    os._exit(exc.code)


class Network:
    """slirp4netns for the default network: forked before the namespaces exist, so that it stays in
    the host's, and exec'd once they do. The child waits for its ready byte before it execs; it
    ends with the helper (killed when the process ended, and `--exit-fd` if the helper is killed)."""

    def __init__(self, conf: Spec, userns: bool) -> None:
        go_r, self.go = os.pipe()
        self.ready, ready_w = os.pipe()
        exit_r, self.exit = os.pipe()
        self.log = conf["log"]
        self.pid = os.fork()
        if self.pid == 0:
            try:
                _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
                os.setsid()  # out of the terminal's process group: a Ctrl-C is for the container only
                os.close(self.go)
                target = os.read(go_r, 32).decode()
                if not target:  # the helper could not make the namespaces
                    os._exit(0)
                for fd in (ready_w, exit_r):
                    os.set_inheritable(fd, True)
                argv = [conf["slirp4netns"], "--configure", f"--mtu={conf['mtu']}", "--disable-host-loopback",
                        "--enable-seccomp", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}"]
                if userns:
                    argv.append(f"--userns-path=/proc/{target}/ns/user")
                os.makedirs(os.path.dirname(self.log), exist_ok=True)
                log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                null = os.open("/dev/null", os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.execv(argv[0], [*argv, target, "tap0"])
            finally:
                os._exit(127)
        for fd in (go_r, ready_w, exit_r):
            os.close(fd)

    def start(self) -> None:
        """The namespaces exist: let slirp4netns join this process's."""
        os.write(self.go, str(os.getpid()).encode())
        os.close(self.go)

    def wait_ready(self) -> None:
        """In the child: block until the interface is configured (or slirp4netns failed)."""
        import select

        if not select.select([self.ready], [], [], READY_TIMEOUT)[0]:
            raise SetupError("network", 125, f"slirp4netns did not connect the network in {READY_TIMEOUT} s")
        if os.read(self.ready, 1):
            os.close(self.ready)
            return
        try:
            with open(self.log, "rb") as f:
                why = f.read().decode("utf-8", "replace").strip().splitlines()[-1:]
        except OSError:
            why = []
        raise SetupError("network", 125, "slirp4netns could not connect the network namespace"
                         + (f": {why[0]}" if why else ""))

    def stop(self) -> None:
        """Kill it without waiting: its exit tears down the tap device, which takes the kernel ~20 ms
        (an RCU grace period) that the caller need not wait for; init reaps it."""
        os.close(self.exit)
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass


def enter_cgroup(spec: Spec, status: int) -> None:
    """Join the container's cgroup before anything else runs, so that every later process is counted
    and killed with it; without a device controller, CAP_MKNOD leaves the bounding set instead.
    This process has one thread (nsinit starts none), so "0" in v1's `tasks` moves all of it
    (`Cgroup.join_files`)."""
    try:
        for path in spec.get("cgroup_join", ()):
            write_file(path, "0")
        if spec.get("drop_mknod"):
            _check(_libc.prctl(PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0), "drop CAP_MKNOD")
    except Exception as exc:
        fail(status, exc)


def setns(path: str, nstype: int, what: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, nstype), f"enter the {what} namespace")
    finally:
        os.close(fd)


def enter_namespaces(spec: Spec, flags: int = CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC) -> None:
    join = spec.get("join")
    if join:  # one thread here: setns into a user namespace allows no other
        if join.get("user"):
            setns(join["user"], CLONE_NEWUSER, "user")
        setns(join["net"], CLONE_NEWNET, "network")
        _check(_libc.unshare(flags), "unshare the namespaces")
        return
    if spec["netns"]:
        flags |= CLONE_NEWNET
    if spec["userns"] and spec.get("idmap"):
        # Subordinate ids: newuidmap/newgidmap must map us from outside the new namespace, so a
        # process forked before unshare does it once we are in, and we go on when it is done.
        mapper = start_mapper(spec["idmap"])
        result = _libc.unshare(flags | CLONE_NEWUSER)
        if result == 0:
            os.write(mapper[1], b"g")
        os.close(mapper[1])  # without "g" the mapper exits at once
        _check(result, "unshare the namespaces")
        finish_mapper(mapper)
    elif spec["userns"]:
        uid, gid = os.geteuid(), os.getegid()
        _check(_libc.unshare(flags | CLONE_NEWUSER), "unshare the namespaces")
        # Map the caller to root inside; setgroups must be denied before an unprivileged gid_map.
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/uid_map", f"0 {uid} 1")
        write_file("/proc/self/gid_map", f"0 {gid} 1")
    else:
        _check(_libc.unshare(flags), "unshare the namespaces")


def start_mapper(idmap: dict[str, Any]) -> tuple[int, int, int]:
    """Fork the process that runs newuidmap/newgidmap for us: (its pid, the go fd, the report fd)."""
    go_r, go_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_w)
            os.close(rep_r)
            if os.read(go_r, 1) == b"g":
                target = str(os.getppid())
                code = 0
                tools: list[tuple[str, list[str]]] = [(idmap["newuidmap"], idmap["uid"]),
                                                      (idmap["newgidmap"], idmap["gid"])]
                started = []
                for tool, args in tools:  # both at once: neither depends on the other
                    name = tool.rsplit("/", 1)[-1]
                    started.append((os.posix_spawn(tool, [name, target, *args], {"PATH": "/usr/bin:/bin"},
                                                   file_actions=[(os.POSIX_SPAWN_DUP2, rep_w, 1),
                                                                 (os.POSIX_SPAWN_DUP2, rep_w, 2)]),
                                    f"{name} {target} {' '.join(args)}"))
                for child_pid, what in started:
                    _, wstatus = os.waitpid(child_pid, 0)
                    if wstatus != 0:
                        os.write(rep_w, f"{what} failed\n".encode())
                        code = 1
        except BaseException as exc:
            code = 1
            os.write(rep_w, f"{exc}\n".encode())
        os._exit(code)
    os.close(go_r)
    os.close(rep_w)
    return pid, go_w, rep_r


def finish_mapper(mapper: tuple[int, int, int]) -> None:
    pid, _, rep_r = mapper
    report = b""
    while chunk := os.read(rep_r, 4096):
        report += chunk
    os.close(rep_r)
    _, wstatus = os.waitpid(pid, 0)
    if wstatus != 0:
        text = report.decode("utf-8", "replace").strip().replace("\n", "; ")
        raise SetupError("userns", 125, f"cannot map the subordinate ids: {text}")


def hold(spec: Spec, status: int) -> int:
    """Make a user (rootless) and network namespace with loopback up, and keep them until killed."""
    try:
        enter_namespaces(spec, 0)
        loopback_up()
    except (SetupError, OSError) as exc:
        fail(status, exc)
    os.write(status, f"pid {os.getpid()}\nready\n".encode())
    os.close(status)
    for name in ("SIGINT", "SIGHUP", "SIGPIPE"):
        _signal.signal(getattr(_signal, name), _signal.SIG_IGN)
    while True:
        _signal.pause()


def confine(spec: Spec) -> None:
    """A process's confinement as `child` applies it: the capability bounding set, seccomp,
    no_new_privs, groups, gid and uid, working directory (the same order, for the same reasons)."""
    caps = spec["capabilities"]
    if caps is not None:
        drop_capabilities(caps)
    proc = spec["process"]
    if spec["seccomp"] and not spec["no_new_privs"]:
        load_seccomp(spec["seccomp"])
    if proc.get("groups") is not None:
        os.setgroups(proc["groups"])
    os.setresgid(proc["gid"], proc["gid"], proc["gid"])
    os.setresuid(proc["uid"], proc["uid"], proc["uid"])
    os.chdir(proc["cwd"])
    if spec["no_new_privs"]:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    if spec["seccomp"] and spec["no_new_privs"]:
        load_seccomp(spec["seccomp"])


def enter(spec: Spec, status: int) -> int:
    """`exec`: a new process in a running container, joined to its cgroup and namespaces (its user
    namespace first, rootless), chrooted to its root, and confined as its own process is (`confine`);
    with `tty`, a pty of the container's devpts whose master goes to the caller over fd 0. The
    process's status is this helper's exit code; signals this helper gets are forwarded to it."""
    target = spec["enter"]
    try:
        for path in spec.get("cgroup_join", ()):
            try:
                write_file(path, "0")
            except OSError:
                pass  # (rootless without a delegated cgroup) it runs outside it, as before
        if spec["tty"]:
            import_terminal_modules()
        root = os.open(f"/proc/{target}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        kinds = [("user", CLONE_NEWUSER)] if spec["userns"] else []
        kinds += [("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS), ("ipc", CLONE_NEWIPC), ("net", CLONE_NEWNET),
                  ("pid", CLONE_NEWPID)]
        fds = [(os.open(f"/proc/{target}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), kind, name) for name, kind in kinds]
        for fd, kind, name in fds:
            _check(_libc.setns(fd, kind), f"enter the container's {name} namespace")
            os.close(fd)
        os.fchdir(root)
        _check(_libc.chroot(b"."), "enter the container's root")
        os.close(root)
    except (SetupError, OSError) as exc:
        fail(status, exc)
    pid = os.fork()  # the new PID namespace is our children's
    if pid == 0:
        try:
            if spec["tty"]:
                setup_terminal(spec["process"]["uid"], console=False)
            else:
                os.setsid()
            confine(spec)
        except FileNotFoundError as exc:
            fail(status, SetupError("exec", 126, f"chdir to cwd ({spec['process']['cwd']!r}) set in config: "
                                    f"{exc.strerror}"))
        except Exception as exc:
            fail(status, exc)
        start_process(spec["process"], status)
    os.write(status, f"pid {pid}\n".encode())
    forward = lambda signum, frame: os.kill(pid, signum)  # noqa: E731
    for name in FORWARDED:
        _signal.signal(getattr(_signal, name), forward)
    _, wstatus = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wstatus)
    code = 128 - code if code < 0 else code
    try:
        os.write(status, f"exit {code}\n".encode())
    except OSError:
        pass
    return code


def main() -> int:
    spec_fd, status = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as f:
        data = f.read()
    if not data:  # started ahead of its spec (`sandbox.prestart`), and not needed after all
        os._exit(0)
    spec = marshal.loads(data)
    os.set_inheritable(status, False)  # closes on exec: EOF then tells the caller exec happened
    global NETWORK
    if spec.get("hold"):
        return hold(spec, status)
    if spec.get("enter"):
        return enter(spec, status)
    if spec["die_with_parent"]:  # a killed build or `run` takes its container and network along
        _libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
    if spec.get("network"):
        NETWORK = Network(spec["network"], spec["userns"])
        os.write(status, f"net {NETWORK.pid}\n".encode())
    try:
        enter_namespaces(spec)
    except (SetupError, OSError) as exc:
        fail(status, exc)
    if NETWORK is not None:
        NETWORK.start()
    console = None
    if spec["tty"] and not is_socket(0):  # no console socket: detached
        console = keep_console()
    pid = os.fork()
    if pid == 0:
        enter_cgroup(spec, status)
        child(spec, status)
    os.write(status, f"pid {pid}\n".encode())
    forward = lambda signum, frame: os.kill(pid, signum)  # noqa: E731
    for name in FORWARDED:  # the container's own terminal (-t) is not ours: its keys do not reach us
        _signal.signal(getattr(_signal, name), forward)
    if NETWORK is not None:
        os.close(NETWORK.ready)
    if console is not None:
        log_terminal(console)
    _, wstatus = os.waitpid(pid, 0)
    if NETWORK is not None:
        NETWORK.stop()
    code = os.waitstatus_to_exitcode(wstatus)
    code = 128 - code if code < 0 else code
    if spec["exit_file"]:
        tmp = spec["exit_file"] + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{code}\n")
        os.rename(tmp, spec["exit_file"])
    try:
        os.write(status, f"exit {code}\n".encode())
    except OSError:  # a detached run's caller is long gone
        pass
    os._exit(code)  # nothing is buffered: the interpreter's finalization would only delay the caller


if __name__ == "__main__":
    sys.exit(main())
