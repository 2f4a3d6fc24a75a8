"""What a sandboxed process is given (ProcessSpec and its mounts) and what a RUN step returns (StepResult)."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from layerbuild.errors import LayerbuildError

Network = Literal["default", "none", "host"]
RootfsMode = Literal["auto", "overlay", "copy"]

# Docker's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
# NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP); the rest leaves the bounding set.
DEFAULT_CAPABILITIES = (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31)


class SandboxError(LayerbuildError):
    """The sandbox could not start the process (exit code 125 for `layerbuild run`)."""

    exit_code = 125


@dataclass(frozen=True)
class BindMount:
    """A host file or directory at `target` inside; read-only unless `readonly=False`."""

    source: Path
    target: str
    readonly: bool = True


@dataclass(frozen=True)
class TmpfsMount:
    """A fresh tmpfs at `target`; `size` in bytes (None: the kernel's default, half the RAM)."""

    target: str
    size: int | None = None
    mode: int = 0o1777


@dataclass(frozen=True)
class SecretMount:
    """A secret file bound read-only at `target` (default `/run/secrets/<id>`); never part of a layer."""

    id: str
    source: Path
    target: str = ""

    @property
    def path(self) -> str:
        return self.target or f"/run/secrets/{self.id}"


Mount = BindMount | TmpfsMount | SecretMount


@dataclass(frozen=True)
class ProcessSpec:
    """The process to run: argv (exec form), env `K=V` list, working dir and user as in an image config.

    `user` is `name`, `uid`, `name:group` or `uid:gid`, looked up in the rootfs's /etc/passwd and
    /etc/group as Docker does; "" is root. `network` "none" gets a namespace with only loopback up.
    `seccomp` is "default" (our profile, Docker's in effect), "unconfined", or a profile in Docker's
    JSON format (its text). `privileged` (RUN --security=insecure) keeps every capability and runs
    without seccomp, no_new_privs, masked paths or nodev, as BuildKit's insecure mode does.
    `no_new_privs` False lets setuid programs gain privileges again (the filter then loads before
    the process drops root, as runc does). `extra_hosts` are (name, address) pairs added to its
    /etc/hosts (`--add-host`; addresses, `host-gateway` already resolved).
    """

    argv: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    hostname: str = "layerbuild"
    network: Network = "default"
    mounts: tuple[Mount, ...] = field(default=())
    seccomp: str = "default"
    privileged: bool = False
    no_new_privs: bool = True
    extra_hosts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.argv:
            raise SandboxError("no command to run", hint="give the image a CMD or ENTRYPOINT, or a command")
        if self.network not in ("default", "none", "host"):
            raise SandboxError(f"unknown network mode {self.network!r}", hint="use default, none or host")
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", tuple(self.env))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "extra_hosts", tuple((str(n), str(ip)) for n, ip in self.extra_hosts))


@dataclass(frozen=True)
class StepResult:
    """How a RUN step ended: the exit code (128+N for signal N) and the last bytes of its output."""

    exit_code: int
    output_tail: bytes
    error: str | None = None


# Runs a helper script's `main()` as a module found on its own directory, appended to sys.path (the
# standard library still comes first): an import uses the script's cached bytecode (__pycache__, made
# by the first start if missing), where running the file as a script would compile it on every start.
_HELPER_BOOT = "import sys; sys.path.append(sys.argv.pop(1)); sys.exit(__import__(sys.argv.pop(1)).main())"


def helper_argv(script: Path, *args: str) -> list[str]:
    """The command line that runs the stdlib-only helper `script` (`main()`, reading `sys.argv[1:]`
    = `args`) isolated from the caller's environment and site (`-I -S`), from its cached bytecode."""
    return [sys.executable, "-I", "-S", "-c", _HELPER_BOOT, os.fspath(script.parent), script.stem, *args]


def start_detached(script: Path, payload: Mapping[str, object], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start one of the runtime's stdlib-only helper scripts (`script SPEC_FD STATUS_FD`) in a session
    of its own, its output appended to `log`, and hand it `payload` (marshal) on its spec pipe;
    returns the process and the read end of its status pipe (the caller reads it and closes it)."""
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            proc = subprocess.Popen(helper_argv(script, str(spec_r), str(status_w)),
                                    pass_fds=(spec_r, status_w), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=out, start_new_session=True)
        finally:
            os.close(out)
    except BaseException:
        for fd in (spec_w, status_r):
            os.close(fd)
        raise
    finally:
        for fd in (spec_r, status_w):
            os.close(fd)
    with os.fdopen(spec_w, "wb") as f:
        f.write(marshal.dumps(dict(payload)))
    return proc, status_r
