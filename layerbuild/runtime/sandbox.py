"""The isolation primitive: start a process on an overlay (or copied) rootfs in fresh namespaces.

`launch` prepares everything that needs the library (mount-point stubs, the user's ids, /etc files,
the copy fallback) and hands a plain spec to `nsinit.py`, which does the syscalls. `run_step` is what
RUN steps use: it runs to completion and leaves in the upper dir only what the process changed.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import posixpath
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, BinaryIO

from layerbuild.platforms import DEFAULT_PATH
from layerbuild.runtime import cgroups, copyfs, network
from layerbuild.runtime.merged import MergedView, MountPoint, place_mounts
from layerbuild.runtime.spec import (
    DEFAULT_CAPABILITIES,
    BindMount,
    ProcessSpec,
    RootfsMode,
    SandboxError,
    SecretMount,
    StepResult,
    TmpfsMount,
    helper_argv,
    start_detached,
)
from layerbuild.runtime.users import resolve_user
from layerbuild.store import Store, idmap
from layerbuild.store.snapshots import remove_tree

NSINIT = Path(__file__).with_name("nsinit.py")
TAIL_BYTES = 64 << 10
_overlay_broken = False  # set once an overlay mount failed in this process: later runs copy at once

Stdio = int | IO[Any] | None


def lower_dirs_for(store: Store, diff_ids: Sequence[str]) -> list[Path]:
    """The snapshot dir of each layer (bottom first), unpacked in overlay form where missing."""
    out = []
    for diff_id in diff_ids:
        records = store.index.layers_by_diff_id(diff_id)
        if not records:
            raise SandboxError(f"layer {diff_id} is not in the store", hint="run `layerbuild fsck`")

        def unpack(dest: Path, digest: str = records[0].digest) -> None:
            from layerbuild.layer import apply_layer  # only when a snapshot is missing: slow to import

            if os.geteuid() == 0:
                with store.reading_blob(digest) as blob:  # verified to its end, damage named
                    apply_layer(blob, dest, whiteouts="overlay")
            else:  # with owners, as the rootless containers' user namespace shows them
                # The child reads the shared file to its end and checks the digest there.
                with store.open_blob(digest) as blob:
                    idmap.call_in_userns(_apply_owned, apply_layer, blob, dest)

        out.append(store.ensure_snapshot(diff_id, unpack))
    return out


def _apply_owned(apply: Any, blob: BinaryIO, dest: Path) -> None:
    apply(blob, dest, whiteouts="overlay", privileged=True)


def _etc_files(work: Path, spec: ProcessSpec) -> dict[str, Path]:
    etc = work / "etc"
    etc.mkdir(exist_ok=True)
    hostname = os.uname().nodename if spec.network == "host" else spec.hostname
    hosts = network.hosts_file(spec.network, hostname, spec.extra_hosts)
    resolv = network.resolv_conf(spec.network)
    files = {"/etc/hosts": hosts, "/etc/resolv.conf": resolv, "/etc/hostname": hostname + "\n"}
    out = {}
    for target, text in files.items():
        path = etc / target.rsplit("/", 1)[1]
        path.write_text(text)
        os.chmod(path, 0o644)
        out[target] = path
    return out


@dataclass
class Launched:
    """A started sandbox: the helper process (outside the namespaces) and the status it reports."""

    helper: subprocess.Popen[bytes]
    status: BinaryIO
    pid: int = 0
    network_pid: int = 0  # the user-mode network helper (slirp4netns) of the default network
    error: str | None = None
    error_stage: str | None = None
    exit_code: int | None = None
    ready: bool = False
    cleanup: list[Path] = field(default_factory=list)
    rootfs: Path | None = None
    baseline: copyfs.Baseline | None = None
    _buf: bytes = b""

    def _line(self) -> str | None:
        while b"\n" not in self._buf:
            chunk = os.read(self.status.fileno(), 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace")

    def read_status(self, until: str) -> None:
        """Consume status lines until `until` ("ready": the pid is known and the process about to exec;
        "exit": it ended), an error, or the end of the stream."""
        while (line := self._line()) is not None:
            word, _, rest = line.partition(" ")
            if word == "pid":
                self.pid = int(rest)
            elif word == "net":
                self.network_pid = int(rest)
            elif word == "ready":
                self.ready = True
            elif word == "error":
                self.error_stage, code, self.error = rest.split(" ", 2)
                self.exit_code = int(code)
                return
            elif word == "exit":
                self.exit_code = int(rest)
            # The helper reports the pid and the child reports readiness: either may come first.
            if (until == "ready" and self.ready and self.pid) or word == until == "exit" \
                    or (until == "pid" and self.pid):
                return

    def wait(self) -> int:
        """Wait for the process to end; its exit code (125 if it could not be started)."""
        if self.exit_code is None or self.error_stage == "exec":
            self.read_status("exit")
        code = self.helper.wait()
        if self.exit_code is None:
            self.exit_code = code if code >= 0 else 128 - code
        self.status.close()
        return self.exit_code

    def release(self) -> None:
        """Remove the scratch dirs made for this run (never the upper dir)."""
        for path in self.cleanup:
            with contextlib.suppress(FileNotFoundError):
                remove_tree(path) if path.is_dir() else path.unlink()


def _mounts(spec: ProcessSpec, etc: dict[str, Path]) -> tuple[list[tuple[str, bool]], list[tuple[Any, ...]]]:
    wanted: list[tuple[str, bool]] = [("/proc", False), ("/dev", False), ("/sys", False)]
    ops: list[tuple[Any, ...]] = [("proc",), ("dev",), ("sys",)]
    for target, path in etc.items():
        wanted.append((target, True))
        ops.append(("bind", os.fspath(path), False))
    user = sorted(spec.mounts, key=lambda m: len([p for p in _target(m).split("/") if p]))
    for m in user:
        if isinstance(m, TmpfsMount):
            wanted.append((m.target, False))
            size = f",size={m.size}" if m.size else ""
            ops.append(("tmpfs", f"mode={m.mode:o}{size}"))
            continue
        source = m.source.absolute()
        if not source.exists():
            raise SandboxError(f"mount source {source} does not exist")
        wanted.append((_target(m), not source.is_dir()))
        ops.append(("bind", os.fspath(source), True if isinstance(m, SecretMount) else m.readonly))
    return wanted, ops


def _target(m: BindMount | TmpfsMount | SecretMount) -> str:
    return m.path if isinstance(m, SecretMount) else m.target


@dataclass
class Helper:
    """An nsinit started before its spec is known (`prestart`), so that its interpreter starts while
    the caller still makes the container; `launch(helper=)` hands it the spec. `discard` ends one
    that was not used (it sees EOF where the spec would come and exits)."""

    proc: subprocess.Popen[bytes]
    spec_w: int
    status_r: int
    stdio: tuple[Stdio, Stdio, Stdio]
    detached: bool
    used: bool = False

    def discard(self) -> None:
        """End the helper unless `launch` took it; idempotent."""
        if self.used:
            return
        self.used = True
        os.close(self.spec_w)
        os.close(self.status_r)
        self.proc.wait()


def prestart(*, stdin: Stdio = subprocess.DEVNULL, stdout: Stdio = None, stderr: Stdio = None,
             detached: bool = False) -> Helper:
    """Start the helper of a `launch` that will follow with these stdio and `detached` (and no
    `attach`); the caller gives it to that `launch`, or `discard`s it."""
    proc, spec_w, status_r = _spawn(stdin, stdout, stderr, detached)
    return Helper(proc, spec_w, status_r, (stdin, stdout, stderr), detached)


def _spawn(stdin: Stdio, stdout: Stdio, stderr: Stdio, detached: bool, extra_fds: tuple[int, ...] = ()
           ) -> tuple[subprocess.Popen[bytes], int, int]:
    """nsinit started with its spec and status pipes (and `extra_fds` passed on): the process, the
    spec pipe's end to write and the status pipe's end to read (the child's ends are closed here)."""
    spec_r, spec_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            helper_argv(NSINIT, str(spec_r), str(status_w)),
            pass_fds=(spec_r, status_w, *extra_fds), stdin=stdin, stdout=stdout,
            stderr=stderr, start_new_session=detached, process_group=None if detached else 0,
        )
    except BaseException:
        os.close(spec_w)
        os.close(status_r)
        raise
    finally:
        os.close(spec_r)
        os.close(status_w)
    return proc, spec_w, status_r


def launch(
    lower: Sequence[Path],
    upper: Path,
    work: Path,
    spec: ProcessSpec,
    *,
    stdin: Stdio = subprocess.DEVNULL,
    stdout: Stdio = None,
    stderr: Stdio = None,
    rootfs: RootfsMode | None = None,
    detached: bool = False,
    tty: bool = False,
    exit_file: Path | None = None,
    cgroup: cgroups.Cgroup | None = None,
    seccomp_cache: Path | None = None,
    attach: Callable[[int], None] | None = None,
    join_netns: int | None = None,
    helper: Helper | None = None,
) -> Launched:
    """Start `spec` and return once it is running (or failed to start). `rootfs` is "overlay", "copy"
    or "auto" (default: $LAYERBUILD_ROOTFS, else auto: overlay, and copy if overlay cannot be mounted).
    The process joins `cgroup` before it starts (see `cgroups.create`). `seccomp_cache` is a directory
    where compiled seccomp programs are kept between processes. `attach(pid)`, when given, is called
    once the process exists in its network namespace and before it is let go: it plugs that
    namespace into the project networks (`bridge.py`); if it raises, the process never runs.
    `join_netns` is the pid of a process whose network namespace (and, rootless, user namespace) the
    container enters instead of making its own (`hold`, the shared namespace of `sharedns.py`).
    `helper` is one `prestart` started for these stdio; launch takes it (and discards it if it fails
    before the helper has its spec)."""
    global _overlay_broken
    try:
        mode = rootfs or os.environ.get("LAYERBUILD_ROOTFS") or "auto"
        if mode not in ("auto", "overlay", "copy"):
            raise SandboxError(f"unknown rootfs mode {mode!r}", hint="use auto, overlay or copy")
        if mode == "auto" and _overlay_broken:
            mode = "copy"
        if helper is not None and (attach is not None or helper.stdio != (stdin, stdout, stderr)
                                   or helper.detached != detached):
            helper.discard()  # started for another launch: of no use here
        args = dict(stdin=stdin, stdout=stdout, stderr=stderr, detached=detached, tty=tty, exit_file=exit_file,
                    cgroup=cgroup, seccomp_cache=seccomp_cache, attach=attach, join_netns=join_netns)
        started = _start(lower, upper, work, spec, copy=mode == "copy", helper=helper,
                         **args)  # type: ignore[arg-type]
    except BaseException:
        if helper is not None:
            helper.discard()
        raise
    if started.error_stage == "overlay" and mode == "auto":
        started.wait()
        started.release()
        _overlay_broken = True
        if exit_file is not None:  # the failed attempt's 125 is not the container's exit code
            exit_file.unlink(missing_ok=True)
        started = _start(lower, upper, work, spec, copy=True, **args)  # type: ignore[arg-type]
    return started


def _start(
    lower: Sequence[Path], upper: Path, work: Path, spec: ProcessSpec, *, copy: bool, stdin: Stdio,
    stdout: Stdio, stderr: Stdio, detached: bool, tty: bool, exit_file: Path | None,
    cgroup: cgroups.Cgroup | None = None, seccomp_cache: Path | None = None,
    attach: Callable[[int], None] | None = None, join_netns: int | None = None, helper: Helper | None = None,
) -> Launched:
    net = network.helper_spec(spec.network, work)  # first: a missing helper is refused before any work
    work.mkdir(parents=True, exist_ok=True)
    upper.mkdir(parents=True, exist_ok=True)
    cleanup = [work / n for n in ("etc", "stubs", "merged", "ovl", "rootfs", "net")]
    for path in cleanup:
        if path.exists():
            remove_tree(path)
    etc = _etc_files(work, spec)
    wanted, ops = _mounts(spec, etc)
    rootless = os.geteuid() != 0
    rootfs_dir, before = None, None
    if copy:
        rootfs_dir = work / "rootfs"
        rootfs_dir.mkdir()
        if rootless:  # owners kept, and subordinate ids' files readable, inside the user namespace
            idmap.call_in_userns(copyfs.merge_lowers, list(lower), rootfs_dir)
        else:
            copyfs.merge_lowers(list(lower), rootfs_dir)
        view = MergedView([rootfs_dir])
        points = _place(view, wanted, None, rootless)
        before = idmap.call_in_userns(copyfs.baseline, rootfs_dir) if rootless else copyfs.baseline(rootfs_dir)
        root: dict[str, Any] = {"mode": "bind", "dir": os.fspath(rootfs_dir)}
    else:
        view = MergedView(lower)
        stubs = work / "stubs"
        stubs.mkdir()
        points = _place(view, wanted, stubs, rootless)
        layers = [*lower, stubs] if any(stubs.iterdir()) else list(lower)
        (work / "ovl").mkdir()
        base = os.path.commonpath([*(os.fspath(p) for p in layers), os.fspath(upper), os.fspath(work)])
        root = {"mode": "overlay", "base": base,
                "lowers": [os.path.relpath(p, base) for p in reversed(layers)],
                "upper": os.path.relpath(upper, base), "work": os.path.relpath(work / "ovl", base)}
    user = resolve_user(view, spec.user)
    ids = idmap.current() if rootless else None
    if ids is not None:
        if not ids.has(user.uid, user.gid):
            err = idmap.unmapped(f"user {spec.user!r}", user.uid, user.gid)
            raise SandboxError(err.message, hint=err.hint)
        user = replace(user, groups=tuple(g for g in user.groups if ids.has(0, g)))  # only mapped groups
    env = list(spec.env)
    keys = {e.partition("=")[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOSTNAME" not in keys:
        env.append(f"HOSTNAME={spec.hostname}")
    if "HOME" not in keys:
        env.append(f"HOME={user.home}")
    target = work / "merged"
    target.mkdir()
    payload = {**security(spec, seccomp_cache),
        "userns": rootless, "netns": spec.network != "host", "tty": tty, "die_with_parent": not detached,
        "network": net,
        "exit_file": os.fspath(exit_file) if exit_file else None,
        "hostname": os.uname().nodename if spec.network == "host" else spec.hostname,
        "target": os.fspath(target), "rootfs": root,
        "cgroup_join": cgroup.join_files() if cgroup else [],
        "drop_mknod": not rootless and not (cgroup and cgroup.devices),
        "mounts": [_placed(op, point) for op, point in zip(ops, points, strict=True)],
        "process": {"argv": list(spec.argv), "env": env, "cwd": spec.cwd or "/", "uid": user.uid,
                    "gid": user.gid, "groups": list(user.groups)},
    }
    payload["idmap"] = _idmap_spec(ids)
    if join_netns is not None:
        payload["join"] = _join_spec(join_netns)
    if helper is not None and not helper.used:  # started ahead (prestart): it waits for this spec
        helper.used = True
        proc, spec_w, status_r = helper.proc, helper.spec_w, helper.status_r
        go_w = -1
        payload["go_fd"] = None
    else:
        go_r, go_w = os.pipe() if attach is not None else (-1, -1)
        payload["go_fd"] = go_r if attach is not None else None
        try:
            proc, spec_w, status_r = _spawn(stdin, stdout, stderr, detached, (go_r,) if attach is not None else ())
        except BaseException:
            if attach is not None:
                os.close(go_w)
            raise
        finally:
            if attach is not None:
                os.close(go_r)
    with os.fdopen(spec_w, "wb") as f:
        f.write(marshal.dumps(payload))
    started = Launched(proc, os.fdopen(status_r, "rb", buffering=0), cleanup=cleanup,
                       rootfs=rootfs_dir, baseline=before)
    if attach is not None:
        try:
            started.read_status("pid")
            if started.pid and started.error is None:
                attach(started.pid)
                os.write(go_w, b"g")
        except BaseException:
            os.close(go_w)  # EOF: the process fails to start; its helper reports it
            started.wait()
            started.release()
            raise
        os.close(go_w)
    started.read_status("ready")
    return started


def _join_spec(pid: int) -> dict[str, str | None]:
    """The namespaces of `pid` that a container joins: its network namespace, and its user namespace
    when that is not ours (rootless: the one that owns that network namespace)."""
    user = f"/proc/{pid}/ns/user"
    try:
        other = os.readlink(user) != os.readlink("/proc/self/ns/user")
    except OSError as exc:
        raise SandboxError(f"the shared network namespace is gone ({exc.strerror})",
                           hint="run compose down, then up again") from None
    return {"user": user if other else None, "net": f"/proc/{pid}/ns/net"}


def hold_namespace(log: Path) -> int:
    """Start a process that makes a network namespace (in a user namespace of its own when rootless,
    mapped as containers are) and holds it until killed; returns its pid once loopback is up there.
    It runs in a session of its own and outlives the caller."""
    rootless = os.geteuid() != 0
    ids = idmap.current() if rootless else None
    payload = {"hold": True, "userns": rootless, "netns": True, "idmap": _idmap_spec(ids)}
    helper, status_r = start_detached(NSINIT, payload, log)
    started = Launched(helper, os.fdopen(status_r, "rb", buffering=0))
    started.read_status("ready")
    started.status.close()
    if started.error or not started.pid:
        helper.wait()
        raise SandboxError(f"cannot make the shared network namespace: {started.error or 'the helper ended'}")
    helper.returncode = 0  # not waited for: it outlives us (Popen's finaliser must not warn)
    return started.pid


def security(spec: ProcessSpec, cache: Path | None) -> dict[str, Any]:
    """What nsinit needs to confine the process: capabilities kept, no_new_privs, the compiled filter."""
    if spec.privileged:
        return {"privileged": True, "capabilities": None, "no_new_privs": False, "seccomp": None}
    program = None
    if spec.seccomp != "unconfined":
        from layerbuild.runtime import seccomp

        profile = None if spec.seccomp == "default" else seccomp.load_profile(spec.seccomp)
        program = seccomp.compile_profile(profile, DEFAULT_CAPABILITIES, cache)
    return {"privileged": False, "capabilities": list(DEFAULT_CAPABILITIES), "no_new_privs": spec.no_new_privs,
            "seccomp": program}


def _place(view: MergedView, wanted: list[tuple[str, bool]], stubs: Path | None, rootless: bool) -> list[MountPoint]:
    if any(_under_dev(path) for path, _ in wanted):
        # The image's /dev is hidden by the sandbox's own tmpfs, where nsinit makes these mount points.
        image = [(path, is_file) for path, is_file in wanted if not _under_dev(path)]
        placed = iter(_place(view, image, stubs, rootless))
        return [MountPoint(posixpath.normpath("/" + path.lstrip("/")), is_file) if _under_dev(path) else next(placed)
                for path, is_file in wanted]
    if not rootless:
        return place_mounts(view, wanted, stubs)
    # In the user namespace: mount points inside directories of subordinate ids (a cache mount in
    # /home/app) are reachable there, and stub directories get the owners of those they stand over.
    return idmap.call_in_userns(place_mounts, view, wanted, stubs)


def _under_dev(path: str) -> bool:
    return posixpath.normpath("/" + path.lstrip("/")).startswith("/dev/")


def _idmap_spec(ids: idmap.IdMap | None) -> dict[str, Any] | None:
    """What nsinit needs to have newuidmap/newgidmap map it (None: no mapping, or the single id)."""
    if ids is None or ids.single:
        return None
    return {"uid": ids.uid_args(), "gid": ids.gid_args(), "newuidmap": ids.newuidmap, "newgidmap": ids.newgidmap}


def _placed(op: tuple[Any, ...], point: MountPoint) -> tuple[Any, ...]:
    return (op[0], point.path, *op[1:])


def run_step(
    lower: Sequence[Path],
    upper: Path,
    work: Path,
    spec: ProcessSpec,
    *,
    stdout: BinaryIO | None = None,
    stdin: bytes | None = None,
    rootfs: RootfsMode | None = None,
    limits: cgroups.Limits | None = None,
    seccomp_cache: Path | None = None,
    release: bool = True,
) -> StepResult:
    """Run a RUN step to completion. stdout and stderr are merged, copied to `stdout` as they come and
    their last bytes returned. Afterwards `upper` holds exactly the process's changes in overlay form
    (nothing the sandbox mounted), ready for `layer.write_overlay_upper`. The step runs in a cgroup
    with `limits` (default: the default pids limit); an OOM kill makes it 137, "killed: out of memory".
    `release=False` leaves the scratch dirs it made in `work` for the caller to remove (with `work`,
    off the step's critical path)."""
    upper.mkdir(parents=True, exist_ok=True)
    in_r = None
    helper = None
    if stdin is not None:
        in_r, in_w = os.pipe()
    else:
        with _warm_lock:
            if _warm:
                helper, out_r, out_w = _warm.pop()
    if helper is None:
        out_r, out_w = os.pipe()
    cgroup = None
    step_in: Stdio = in_r if in_r is not None else subprocess.DEVNULL
    try:
        # The helper's interpreter starts now (if `warm_step_helpers` did not start it already),
        # while the cgroup, the mounts and the seccomp program are made: it waits for its spec,
        # which `launch` sends.
        if helper is None:
            helper = prestart(stdin=step_in, stdout=out_w, stderr=out_w)
        cgroup = cgroups.create(limits or cgroups.Limits(), label=cgroups.STEP_LABEL + os.urandom(6).hex())
        started = launch(lower, upper, work, spec, stdin=step_in, stdout=out_w, stderr=out_w, rootfs=rootfs,
                         cgroup=cgroup, seccomp_cache=seccomp_cache, helper=helper)
    except BaseException:
        os.close(out_r)
        if helper is not None:
            helper.discard()
        if cgroup is not None:
            cgroup.remove()
        raise
    finally:
        os.close(out_w)
        if in_r is not None:
            os.close(in_r)
    with _running_lock:
        _running.add(started.helper)
    try:
        if stdin is not None:  # from a thread, so a process that writes before it reads cannot block us
            threading.Thread(target=_feed, args=(in_w, stdin), daemon=True).start()
        tail = _pump(out_r, stdout)
        code = started.wait()
        reason = cgroup.diagnosis(code) if cgroup is not None else None
        if started.rootfs is not None and started.baseline is not None:
            if os.geteuid() != 0:
                idmap.call_in_userns(copyfs.diff_into_upper, started.rootfs, started.baseline, upper)
            else:
                copyfs.diff_into_upper(started.rootfs, started.baseline, upper)
    finally:
        with _running_lock:
            _running.discard(started.helper)
        os.close(out_r)
        if release:
            started.release()
        if cgroup is not None:
            cgroup.remove()
    if started.error and started.error_stage != "exec":
        tail += f"layerbuild: {started.error}\n".encode()
    if code != 0 and b"Invalid argument" in tail[-4096:] and os.geteuid() != 0 and idmap.current().single:
        # e.g. `chown 1000 f`: an id the single-id mapping does not have
        tail += f"layerbuild: note: {idmap.missing_hint()}\n".encode()
    if reason is not None:
        code = 137 if reason == cgroups.OOM_MESSAGE else code
        tail += f"layerbuild: {reason}\n".encode()
    return StepResult(code, tail[-TAIL_BYTES:], started.error or reason)


_running: set[subprocess.Popen[bytes]] = set()  # the helpers of the RUN steps under way
_running_lock = threading.Lock()
# Helpers started ahead for RUN steps without stdin, each with its output pipe (read end, write end).
_warm: list[tuple[Helper, int, int]] = []
_warm_lock = threading.Lock()


def warm_step_helpers(count: int) -> None:
    """Start `count` helpers for RUN steps to come (without stdin), so that their interpreters start
    while the build plans and reads its context; `run_step` takes one when it starts a step.
    `drop_step_helpers` ends those left over. A helper that cannot be started is left to `run_step`."""
    for _ in range(count):
        out_r, out_w = os.pipe()
        try:
            helper = prestart(stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w)
        except OSError:
            os.close(out_r)
            os.close(out_w)
            return
        with _warm_lock:
            _warm.append((helper, out_r, out_w))


def drop_step_helpers() -> None:
    """End the helpers `warm_step_helpers` started that no step took (each sees EOF and exits)."""
    with _warm_lock:
        left = list(_warm)
        _warm.clear()
    for helper, out_r, out_w in left:
        os.close(out_w)
        helper.discard()
        os.close(out_r)


def cancel_running() -> None:
    """Kill every RUN step under way in this process (Ctrl-C of a build): SIGKILL to its helper, whose
    death takes the step's PID 1, and with it its whole PID namespace, and its network helper along.
    Each step then ends as killed (137) and leaves nothing in the store; `run_step` cleans up as usual."""
    with _running_lock:
        helpers = list(_running)
    for helper in helpers:
        with contextlib.suppress(ProcessLookupError):
            helper.kill()


def _pump(fd: int, sink: BinaryIO | None) -> bytes:
    tail = bytearray()
    while chunk := os.read(fd, 65536):
        if sink is not None:
            sink.write(chunk)
            sink.flush()
        tail += chunk
        if len(tail) > 2 * TAIL_BYTES:
            del tail[:-TAIL_BYTES]
    return bytes(tail)


def _feed(fd: int, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as f:
        f.write(data)
