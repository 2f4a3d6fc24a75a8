"""`exec`: a new process in a running container's namespaces (mount, UTS, IPC, network, PID, and the
user namespace of a rootless one), its root and working directory, its environment, and its cgroup.

It goes through util-linux's `nsenter`, started in the container's cgroup so that `stop` kills what
it runs too. The process gets the container's user, but not its seccomp filter or reduced capability
set (as `nsenter` leaves them): exec is for the container's owner, who can do more already.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from layerbuild.errors import UsageError
from layerbuild.runtime.containers import Container
from layerbuild.runtime.spec import SandboxError


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


def command(c: Container, argv: Sequence[str], *, user: str | None = None, workdir: str | None = None) -> list[str]:
    """The nsenter command line that runs `argv` inside `c`."""
    if not c.running():
        raise UsageError(f"container {c.name} is not running", hint="start it first")
    if not argv:
        raise UsageError("exec needs a command")
    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
    if not os.access(nsenter, os.X_OK):
        raise SandboxError("exec needs util-linux's nsenter", hint="apt-get install util-linux")
    # nsenter opens the directory before it enters: name it through the container's root
    wd = (workdir or c.config.get("workdir") or "/").lstrip("/")
    cmd = [nsenter, f"--target={c.pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--root",
           f"--wd=/proc/{c.pid}/root/{wd}"]
    if os.readlink(f"/proc/{c.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
        cmd.append("--user")
    ids = _ids(c, c.config.get("user") or "" if user is None else user)
    if ids is not None:
        cmd += [f"--setuid={ids[0]}", f"--setgid={ids[1]}"]
    return [*cmd, "--", *argv]


def exec_in(c: Container, argv: Sequence[str], *, env: Sequence[str] = (), user: str | None = None,
            workdir: str | None = None, stdin: int | IO[Any] | None = None, stdout: int | IO[Any] | None = None,
            stderr: int | IO[Any] | None = None, timeout: float | None = None) -> int:
    """Run `argv` in `c` to its end; its exit code (124 after `timeout`, as timeout(1) reports it)."""
    from layerbuild.runtime import cgroups

    cmd = command(c, argv, user=user, workdir=workdir)
    environ = dict(e.partition("=")[::2] for e in c.config.get("env", []))
    environ.update(e.partition("=")[::2] for e in env)
    environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    cgroup = cgroups.Cgroup.from_json(c.cgroup)
    procs = cgroup.procs_files() if cgroup is not None else []

    def join() -> None:
        for path in procs:
            try:
                with open(path, "w") as f:
                    f.write("0")
            except OSError:
                pass

    proc = subprocess.Popen(cmd, env=environ, stdin=stdin, stdout=stdout, stderr=stderr, preexec_fn=join)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return 124
    return code if code >= 0 else 128 - code
