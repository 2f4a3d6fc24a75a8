"""seccomp profiles (Docker's JSON format and our default) compiled to BPF with libseccomp, through ctypes.

The profile is compiled here, in the library, and `nsinit.py` only loads the resulting program
(`prctl(PR_SET_SECCOMP)` after `no_new_privs`), so starting a sandbox never loads libseccomp.
`DEFAULT_PROFILE` has the effect of Docker's default profile: an allow-list of system calls
(everything else fails with EPERM), with Docker's conditional rules (namespace flags of `clone`
only with CAP_SYS_ADMIN, `personality` only for the harmless personas, calls that need a capability
only when the container has it). Compiled programs are cached per process, keyed by the profile
and the capability set.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from layerbuild.runtime.spec import SandboxError


def _words(text: str) -> list[str]:
    return text.split()


# Allowed for every container (Docker's unconditional list, plus calls of newer kernels of the same kind).
# io_uring is left out, as Docker's current profile does: it bypasses the filter for the I/O it queues.
_ALLOWED = _words("""
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate
fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync
fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake
futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority getrandom
getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname
getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat
lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod
mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd
msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64
pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64
recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 send sendfile sendfile64
sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32
setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask
uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
write writev
""")
# Calls allowed only when the container holds the capability (as Docker's `includes.caps`).
_BY_CAPABILITY = {
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
                     "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
                     "sethostname setns syslog umount umount2 unshare",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
}
# Per-architecture calls (Docker's `includes.arches`: the machine's own architecture, Go's names).
_BY_ARCH = {
    ("amd64", "x32", "x86"): "modify_ldt",
    ("amd64", "x32"): "arch_prctl",
    ("arm", "arm64"): "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
    ("ppc64le",): "sync_file_range2 swapcontext",
    ("riscv64",): "riscv_flush_icache",
    ("s390", "s390x"): "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
}
_AF_VSOCK = 40  # sockets to the hypervisor: refused, as Docker does
# clone's namespace flags (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET): a new user
# namespace is the way around every other restriction, so clone may set none of them.
_CLONE_NS_FLAGS = 0x7E020000
# personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 variants, and the query.
_PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
_EPERM, _ENOSYS = 1, 38
_NR_SCMP_ERROR = -1


def _default_profile() -> dict[str, Any]:
    syscalls: list[dict[str, Any]] = [{"names": list(_ALLOWED), "action": "SCMP_ACT_ALLOW"}]
    syscalls += [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]} for v in _PERSONAS]
    syscalls.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}]})
    # Before 4.8 a ptraced process could get around the filter.
    syscalls.append({"names": ["process_vm_readv", "process_vm_writev", "ptrace"], "action": "SCMP_ACT_ALLOW",
                     "includes": {"minKernel": "4.8"}})
    for arches, names in _BY_ARCH.items():
        syscalls.append({"names": names.split(), "action": "SCMP_ACT_ALLOW", "includes": {"arches": list(arches)}})
    for cap, names in _BY_CAPABILITY.items():
        syscalls.append({"names": names.split(), "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}})
    syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": _CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                     "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}})
    syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 1, "value": _CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                     "includes": {"arches": ["s390", "s390x"]},
                     "excludes": {"caps": ["CAP_SYS_ADMIN"]}})
    # clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libc fall back to clone.
    syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS,
                     "excludes": {"caps": ["CAP_SYS_ADMIN"]}})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": _EPERM,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
            {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": []},
            {"architecture": "SCMP_ARCH_PPC64LE", "subArchitectures": []},
            {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
        ],
        "syscalls": syscalls,
    }


DEFAULT_PROFILE: Mapping[str, Any] = _default_profile()

# Docker's names for the capabilities, by number (what nsinit keeps is given as numbers).
CAPABILITY_NAMES = _words(
    "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID "
    "CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW "
    "CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT "
    "CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD "
    "CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG "
    "CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE"
)

_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000, "SCMP_ACT_KILL_PROCESS": 0x80000000,
            "SCMP_ACT_TRAP": 0x00030000, "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
            "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "riscv64": "SCMP_ARCH_RISCV64",
           "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X", "armv7l": "SCMP_ARCH_ARM",
           "i686": "SCMP_ARCH_X86"}
# Docker spells aarch64 both ways; `includes.arches` uses Go's names for the machine.
_ARCH_ALIASES = {"SCMP_ARCH_ARM64": "SCMP_ARCH_AARCH64", "amd64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86",
                 "386": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32", "arm": "SCMP_ARCH_ARM", "arm64": "SCMP_ARCH_AARCH64",
                 "ppc64le": "SCMP_ARCH_PPC64LE", "s390": "SCMP_ARCH_S390", "s390x": "SCMP_ARCH_S390X",
                 "riscv64": "SCMP_ARCH_RISCV64"}
_HINT = "give a profile in Docker's format (defaultAction, syscalls[].names/action/args), or seccomp=unconfined"


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.cache
def _lib() -> ctypes.CDLL:
    try:  # the soname first: find_library runs ldconfig, which costs more than the compile
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        lib = None
    name = None
    if lib is None:
        from ctypes.util import find_library  # (it imports tempfile: only for this fallback)

        name = find_library("seccomp")
    try:
        lib = lib or ctypes.CDLL(name or "libseccomp.so.2", use_errno=True)
    except OSError:
        raise SandboxError("libseccomp is not installed: the seccomp profile cannot be compiled",
                           hint="install Debian's libseccomp2, or run with --security-opt seccomp=unconfined") from None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def load_profile(text: str, source: str = "the seccomp profile") -> dict[str, Any]:
    """A profile in Docker's JSON format, checked enough that compiling it cannot fail obscurely."""
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise SandboxError(f"{source} is not valid JSON: {exc}", hint=_HINT) from None
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        raise SandboxError(f"{source} has no defaultAction", hint=_HINT)
    _action(profile["defaultAction"], profile.get("defaultErrnoRet"), source)
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SandboxError(f"{source}: syscalls must be a list", hint=_HINT)
    for i, rule in enumerate(syscalls):
        where = f"{source}: syscalls[{i}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("action"), str):
            raise SandboxError(f"{where} has no action", hint=_HINT)
        names = rule.get("names") or ([rule["name"]] if isinstance(rule.get("name"), str) else [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise SandboxError(f"{where} names no system call", hint=_HINT)
        _action(rule["action"], rule.get("errnoRet"), where)
        for arg in rule.get("args") or []:
            if (not isinstance(arg, dict) or arg.get("op") not in _OPS or not isinstance(arg.get("index"), int)
                    or not 0 <= arg["index"] < 6 or not isinstance(arg.get("value", 0), int)
                    or not isinstance(arg.get("valueTwo", 0), int)):
                raise SandboxError(f"{where}: bad argument condition {arg!r}",
                                   hint="each arg needs index 0-5, an integer value and an op such as SCMP_CMP_EQ")
    return profile


def _action(name: str, errno_ret: Any, where: str) -> int:
    if name not in _ACTIONS:
        known = ", ".join(sorted(_ACTIONS))
        raise SandboxError(f"{where}: unsupported action {name!r}", hint=f"use one of {known}")
    value = _ACTIONS[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):  # both carry a value: the errno, the tracer's message
        value |= (errno_ret if isinstance(errno_ret, int) else _EPERM) & 0xFFFF
    return value


def compile_profile(profile: Mapping[str, Any] | None, capabilities: Iterable[int],
                    cache_dir: Path | None = None) -> bytes:
    """The BPF program (struct sock_filter[] bytes) of `profile` (default: ours) for a process holding
    `capabilities` (numbers). With `cache_dir`, programs are kept there by what decides them (the
    profile, the capabilities, libseccomp's version, the kernel and the machine), so a new process
    reads the file instead of compiling again."""
    text = json.dumps(profile if profile is not None else DEFAULT_PROFILE, sort_keys=True)
    caps = frozenset(capabilities)
    # One compile per program in a process: the parallel stages of a build that start their RUN
    # steps together wait for the first instead of each compiling the same program.
    with _compiling:
        return _cached(text, caps, cache_dir)


_compiling = threading.Lock()


def _cached(text: str, caps: frozenset[int], cache_dir: Path | None) -> bytes:
    if cache_dir is None:
        return _compile(text, caps)
    uname = os.uname()
    key = hashlib.sha256(f"{text}\0{sorted(caps)}\0{_lib_version()}\0{uname.release}\0{uname.machine}".encode())
    name = f"{key.hexdigest()[:32]}.bpf"
    # The store's cache, then the user's own (a new store, as every CI job has, finds it there).
    stored = _read_program(cache_dir / name)
    if stored is not None:
        return stored
    user = _user_cache_dir()  # looked up only when the store has none: not on every RUN step
    if user is not None and (kept := _read_program(user / name)) is not None:
        _keep(cache_dir, name, kept)  # the store keeps it too: its next build knows it has one
        return kept
    program = _compile(text, caps)
    for folder in (cache_dir, *([user] if user is not None else [])):
        _keep(folder, name, program)
    return program


def _read_program(path: Path) -> bytes | None:
    with contextlib.suppress(OSError):
        data = path.read_bytes()
        if data and len(data) % 8 == 0:
            return data
    return None


def _keep(folder: Path, name: str, program: bytes) -> None:
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next compile
        folder.mkdir(mode=0o700, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(program)
        os.replace(tmp, folder / name)


def _user_cache_dir() -> Path | None:
    """The user's own directory for compiled programs (`$XDG_CACHE_HOME/layerbuild/seccomp`, else
    `~/.cache/…`); None when it is not theirs alone (another owner, or others may write there)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None
    folder = Path(base) / "layerbuild" / "seccomp"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return folder


def _lib_version() -> str:
    lib = _lib()
    version = lib.seccomp_version().contents
    return f"{version.major}.{version.minor}.{version.micro}"


@functools.cache
def _compile(text: str, capabilities: frozenset[int]) -> bytes:
    profile = json.loads(text)
    caps = {CAPABILITY_NAMES[c] for c in capabilities if c < len(CAPABILITY_NAMES)}
    lib = _lib()
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"), "defaultAction")
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SandboxError("libseccomp could not start a filter")
    try:
        arches = _arches(profile)
        for arch in arches:
            token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
            if token:
                lib.seccomp_arch_add(ctx, token)  # -EEXIST for the native one: fine
        kernel = _kernel_version()
        for rule in profile.get("syscalls") or []:
            if not _applies(rule, caps, arches, kernel):
                continue
            action = _action(rule["action"], rule.get("errnoRet"), "rule")
            if action == default:
                continue  # libseccomp refuses rules that repeat the default
            names = rule.get("names") or [rule["name"]]
            for name in names:
                number = lib.seccomp_syscall_resolve_name(name.encode())
                if number == _NR_SCMP_ERROR:
                    continue  # a call this libseccomp does not know: skipped, as Docker does
                _add(lib, ctx, action, number, rule.get("args") or [], name)
        fd = os.memfd_create("seccomp-bpf")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc != 0:
                raise SandboxError(f"libseccomp could not export the filter: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def runtime_spec(profile: Mapping[str, Any] | None, capabilities: Iterable[str]) -> dict[str, Any]:
    """`profile` (default: ours) as an OCI runtime-spec `linux.seccomp` for a process holding
    `capabilities` (names): the conditions on capabilities, architectures and kernel resolved here."""
    profile = profile if profile is not None else DEFAULT_PROFILE
    caps, arches, kernel = set(capabilities), _arches(profile), _kernel_version()
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, caps, arches, kernel):
            continue
        entry: dict[str, Any] = {"names": list(rule.get("names") or [rule["name"]]), "action": rule["action"]}
        if "errnoRet" in rule:
            entry["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            entry["args"] = [{"index": a["index"], "value": a.get("value", 0), "valueTwo": a.get("valueTwo", 0),
                              "op": a["op"]} for a in rule["args"]]
        syscalls.append(entry)
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"], "architectures": arches, "syscalls": syscalls}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return out


def _add(lib: ctypes.CDLL, ctx: int, action: int, number: int, args: list[dict[str, Any]], name: str) -> None:
    indexes = [a["index"] for a in args]
    # libseccomp ANDs the conditions of one rule and takes one condition per argument; conditions on
    # the same argument are alternatives (Docker's reading): one rule each.
    groups = [args] if len(set(indexes)) == len(indexes) else [[a] for a in args]
    for group in groups:
        array = (_ArgCmp * max(len(group), 1))()
        for i, a in enumerate(group):
            array[i] = _ArgCmp(a["index"], _OPS[a["op"]], a.get("value", 0) & (2**64 - 1),
                               a.get("valueTwo", 0) & (2**64 - 1))
        rc = lib.seccomp_rule_add_array(ctx, action, number, len(group), array)
        if rc != 0:
            raise SandboxError(f"the seccomp rule for {name} cannot be added: {os.strerror(-rc)}", hint=_HINT)


def _arches(profile: Mapping[str, Any]) -> list[str]:
    native = _NATIVE.get(os.uname().machine, "")
    arch_map = profile.get("archMap")
    if arch_map:
        for entry in arch_map:
            if _ARCH_ALIASES.get(entry.get("architecture"), entry.get("architecture")) == native:
                return [native, *(entry.get("subArchitectures") or [])]
        return [native]
    listed = [_ARCH_ALIASES.get(a, a) for a in profile.get("architectures") or []]
    return [native, *(a for a in listed if a != native)]  # the machine's own first


def _applies(rule: Mapping[str, Any], caps: set[str], arches: list[str], kernel: tuple[int, ...]) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    native = arches[:1]  # as Docker reads them, arch conditions name the machine's own architecture
    wanted = [_ARCH_ALIASES.get(a, a) for a in inc.get("arches") or []]
    if wanted and not set(wanted) & set(native):
        return False
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("minKernel") and kernel < _version(inc["minKernel"]):
        return False
    if exc.get("arches") and set(_ARCH_ALIASES.get(a, a) for a in exc["arches"]) & set(native):
        return False
    return not (exc.get("caps") and set(exc["caps"]) & caps)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _kernel_version() -> tuple[int, ...]:
    return _version(os.uname().release.split("-", 1)[0])
