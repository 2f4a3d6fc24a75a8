"""A container's cgroup: its limits applied, the device allow-list, OOM and pids reports, kill and removal.

cgroup v2 (one unified hierarchy: memory.max, memory.swap.max, cpu.max, pids.max, cgroup.kill) is used
when the unified hierarchy has the controllers; otherwise the v1 hierarchies (memory, cpu, pids,
devices, freezer), each under the caller's own cgroup of that controller. Docker's device allow-list
is the v1 devices controller's, or on v2 a BPF program (`devicefilter`). A cgroup is named
`layerbuild-<pid>-<token>` after the process that made it, so that the next one can remove what a
dead process left (`remove_leftovers`): rmdir only ever removes an empty cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.runtime.limits import ALLOWED_DEVICES, Limits, needed, parse_limits, v1_files, v2_files
from layerbuild.runtime.spec import SandboxError

__all__ = ["OOM_MESSAGE", "Cgroup", "Hierarchy", "Limits", "create", "parse_limits", "remove_leftovers"]

PREFIX = "layerbuild-"
STEP_LABEL = "step"  # the label of a RUN step's cgroup: nobody needs it once its creator is gone
OOM_MESSAGE = "killed: out of memory"
V1_CONTROLLERS = ("memory", "cpu", "pids", "devices", "freezer")
V2_CONTROLLERS = ("memory", "cpu", "pids")

@dataclass(frozen=True)
class Hierarchy:
    """Where this process's cgroups are: v2 (one dir under "") or v1 (a dir per controller)."""

    version: int
    parents: dict[str, Path]
    mount: Path | None = None  # v2: the hierarchy's root, where root goes when its own cgroup is busy

    @classmethod
    def detect(cls, mountinfo: str = "/proc/self/mountinfo", membership: str = "/proc/self/cgroup") -> Hierarchy:
        mounts: dict[str, Path] = {}
        unified: Path | None = None
        with contextlib.suppress(OSError), open(mountinfo) as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                fstype, options = fields[sep + 1], fields[sep + 3].split(",")
                if fstype == "cgroup2":
                    unified = Path(fields[4])
                elif fstype == "cgroup":
                    for ctrl in V1_CONTROLLERS:
                        if ctrl in options:
                            mounts[ctrl] = Path(fields[4])
        paths: dict[str, str] = {}
        with contextlib.suppress(OSError), open(membership) as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for ctrl in ctrls.split(",") if ctrls else [""]:
                    paths[ctrl] = path.lstrip("/")
        if unified is not None and "" in paths:
            try:
                have = set((unified / "cgroup.controllers").read_text().split())
            except OSError:
                have = set()
            if have & set(V2_CONTROLLERS):
                return cls(2, {"": unified / paths[""]}, unified)
        return cls(1, {c: m / paths[c] for c, m in mounts.items() if c in paths and (m / paths[c]).is_dir()})


class Cgroup:
    """One container's cgroup: its directories (one per v1 controller, or the v2 one)."""

    def __init__(self, version: int, dirs: dict[str, Path], device_filter: bool = False) -> None:
        self.version = version
        self.dirs = dirs
        self.device_filter = device_filter  # v2: the allow-list's BPF program is attached

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "dirs": {k: str(v) for k, v in self.dirs.items()},
                "device_filter": self.device_filter}

    @classmethod
    def from_json(cls, data: object) -> Cgroup | None:
        if not isinstance(data, dict) or not isinstance(data.get("dirs"), dict):
            return None
        return cls(int(data.get("version", 1)), {str(k): Path(v) for k, v in data["dirs"].items()},
                   bool(data.get("device_filter")))

    @property
    def devices(self) -> bool:
        """Whether the device allow-list is enforced (the v1 devices controller, or v2's BPF filter)."""
        return "devices" in self.dirs or self.device_filter

    def procs_files(self) -> list[str]:
        """The `cgroup.procs` files a process writes itself into to join."""
        return list(dict.fromkeys(str(d / "cgroup.procs") for d in self.dirs.values()))

    def join_files(self) -> list[str]:
        """The files a process of one thread writes "0" into to join (nsinit, before any thread or
        exec). On v1, each hierarchy's `tasks`: moving the writing thread alone is done without the
        kernel's threadgroup lock, whose write side waits for an RCU grace period (10-30 ms) each
        time it is taken after a quiet spell, as a write to `cgroup.procs` takes it; a process of
        one thread moves with its thread. On v2 (no `tasks`), `cgroup.procs`."""
        if self.version == 2:
            return self.procs_files()
        return list(dict.fromkeys(str(d / "tasks") for d in self.dirs.values()))

    def _main(self) -> Path:
        return self.dirs.get("") or self.dirs.get("freezer") or self.dirs.get("pids") or next(iter(self.dirs.values()))

    def pids(self) -> list[int]:
        if not self.dirs:
            return []
        try:
            return [int(p) for p in (self._main() / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def _counter(self, ctrl: str, name: str, key: str) -> int:
        try:
            text = (self.dirs[ctrl] / name).read_text()
        except (KeyError, OSError):
            return 0
        for line in text.splitlines():
            word, _, value = line.partition(" ")
            if word == key:
                return int(value)
        return 0

    def oom_kills(self) -> int:
        """How many processes the kernel killed for want of memory in this cgroup."""
        if self.version == 2:
            return self._counter("", "memory.events", "oom_kill")
        return self._counter("memory", "memory.oom_control", "oom_kill")

    def pids_limit_hits(self) -> int:
        """How many forks failed because the pids limit was reached."""
        return self._counter("" if self.version == 2 else "pids", "pids.events", "max")

    def pids_max(self) -> str:
        try:
            return (self.dirs["" if self.version == 2 else "pids"] / "pids.max").read_text().strip()
        except (KeyError, OSError):
            return "max"

    def diagnosis(self, exit_code: int) -> str | None:
        """Why a process that ended with `exit_code` failed, if its cgroup knows: OOM or the pids limit."""
        if exit_code == 0:
            return None
        if self.oom_kills():
            return OOM_MESSAGE
        if self.pids_limit_hits():
            return f"the process limit ({self.pids_max()}) was reached: a fork failed"
        return None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the cgroup, however many it forks meanwhile; returns once it is empty."""
        if not self.dirs:
            return
        if self.version == 2 and (self._main() / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self._main() / "cgroup.kill", "1")
        frozen = self._freeze(True)
        deadline = time.monotonic() + timeout
        try:
            while (pids := self.pids()) and time.monotonic() < deadline:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                if frozen:  # a frozen process dies only once thawed; frozen ones cannot fork first
                    self._freeze(False)
                    frozen = False
                time.sleep(0.005)
        finally:
            if frozen:
                self._freeze(False)

    def _freeze(self, on: bool) -> bool:
        if self.version == 2:
            path, value = self._main() / "cgroup.freeze", "1" if on else "0"
        elif "freezer" in self.dirs:
            path, value = self.dirs["freezer"] / "freezer.state", "FROZEN" if on else "THAWED"
        else:
            return False
        try:
            _write(path, value)
        except OSError:
            return False
        if on and self.version == 1:  # freezing is asynchronous in v1: wait until it is done
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    if path.read_text().strip() == "FROZEN":
                        break
                time.sleep(0.002)
        return True

    def remove(self) -> None:
        """Remove the cgroup (killing what still runs in it); never raises."""
        if self.pids():
            self.kill()
        for path in self.dirs.values():
            _rmdir(path)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _rmdir(path: Path, wait: bool = True) -> bool:
    # A cgroup whose last process just exited may be busy for a moment.
    for _ in range(50 if wait else 1):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return False
            time.sleep(0.01)
    return False


def create(limits: Limits, label: str = "", hierarchy: Hierarchy | None = None) -> Cgroup | None:
    """A new cgroup with `limits` (and on v1 the device allow-list), or None when there is no cgroup
    to be had (no hierarchy, or not writable, as for rootless users) and no limit was asked for.
    Raises SandboxError when a limit was asked for that cannot be applied."""
    hierarchy = hierarchy or Hierarchy.detect()
    remove_leftovers(hierarchy)
    name = f"{PREFIX}{os.getpid()}-{label or os.urandom(6).hex()}"
    need = needed(limits)
    try:
        if hierarchy.version == 2:
            try:
                cg = _create_v2(hierarchy.parents[""], name, limits, need)
            except OSError as exc:
                # A cgroup with processes of its own cannot give controllers to children (v2's rule):
                # root then uses the hierarchy's root, as docker's cgroupfs driver does.
                if exc.errno != errno.EBUSY or hierarchy.mount is None or os.geteuid() != 0:
                    raise
                cg = _create_v2(hierarchy.mount, name, limits, need)
        else:
            cg = _create_v1(hierarchy.parents, name, limits, need)
    except OSError as exc:
        if limits.requested():
            raise SandboxError(f"cannot apply the resource limits: {exc.strerror} ({exc.filename})",
                               hint=_hint(exc)) from None
        return None
    return cg


def _hint(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "cgroups are not writable here (rootless, or a read-only /sys/fs/cgroup): run without " \
               "--memory/--cpus/--pids-limit, or with a delegated cgroup v2 subtree"
    return "the cgroup controller for this limit is not available on this host"


def _missing(ctrls: Iterable[str]) -> OSError:
    names = ", ".join(sorted(ctrls))
    return OSError(errno.ENOENT, "no cgroup controller for the limit", names)


def _create_v1(parents: dict[str, Path], name: str, limits: Limits, need: set[str]) -> Cgroup:
    if need - set(parents):
        raise _missing(need - set(parents))
    if not parents:
        raise _missing(["memory", "pids"])
    dirs: dict[str, Path] = {}
    cg = Cgroup(1, dirs)
    try:
        for ctrl, parent in parents.items():
            path = parent / name
            if path not in dirs.values():  # controllers mounted together share one directory
                path.mkdir()
            dirs[ctrl] = path
        for ctrl, file, value in v1_files(limits):
            if ctrl not in dirs:
                continue
            path = dirs[ctrl] / file
            if file == "memory.memsw.limit_in_bytes" and not path.exists():
                continue  # no swap accounting: memory is limited without swap, as docker warns
            _write(path, value)
    except OSError:
        cg.remove()
        raise
    return cg


def _create_v2(parent: Path, name: str, limits: Limits, need: set[str]) -> Cgroup:
    have = enable_v2(parent, need, optional={"pids"} if limits.pids_max() is not None else set())
    path = parent / name
    path.mkdir()
    cg = Cgroup(2, {"": path})
    try:
        for file, value in v2_files(limits):
            if file.partition(".")[0] not in have or (file == "memory.swap.max" and not (path / file).exists()):
                continue  # no pids controller for the default limit only, or no swap accounting
            _write(path / file, value)
    except OSError:
        cg.remove()
        raise
    from layerbuild.runtime import devicefilter  # ctypes: only where there is a v2 cgroup

    try:
        devicefilter.attach(str(path), ALLOWED_DEVICES)
        cg.device_filter = True
    except OSError:
        pass  # no BPF here: the sandbox drops CAP_MKNOD instead
    return cg


def enable_v2(parent: Path, need: set[str], optional: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Make the controllers `need` (and those of `optional` that exist) available to the children of
    `parent`, enabling them from the hierarchy's root down; the controllers the children will have."""
    def read(name: str) -> set[str]:
        try:
            return set((parent / name).read_text().split())
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(parent / name)) from None

    have = read("cgroup.subtree_control")
    wanted = (need | optional) - have
    if not wanted:
        return have
    available = read("cgroup.controllers")
    if wanted - available and (parent.parent / "cgroup.subtree_control").exists():
        enable_v2(parent.parent, (wanted - available) & need, (wanted - available) - need)
        available = read("cgroup.controllers")
    if need - have - available:
        raise _missing(need - have - available)
    wanted &= available
    if wanted:
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
    return have | wanted


def remove_leftovers(hierarchy: Hierarchy | None = None) -> int:
    """Remove the cgroups that processes now gone left behind; the number removed. A RUN step's
    (label `step…`) is killed first: the build that wanted its result is dead. Any other (a detached
    container's, whose creator exits at once) is removed only once empty. A live creator's are kept."""
    from layerbuild.store.layout import proc_start_time

    hierarchy = hierarchy or Hierarchy.detect()
    parents = {*hierarchy.parents.items(), *([("", hierarchy.mount)] if hierarchy.mount else [])}
    found: dict[str, dict[str, Path]] = {}
    for ctrl, parent in parents:
        try:
            entries = [e for e in os.scandir(parent) if e.name.startswith(PREFIX) and e.is_dir()]
        except OSError:
            continue
        for entry in entries:
            owner = entry.name[len(PREFIX):].partition("-")[0]
            if owner.isdigit() and proc_start_time(int(owner)) is None:  # gone (a zombie too)
                found.setdefault(entry.name, {})[ctrl] = Path(entry.path)
    removed = 0
    for name, dirs in found.items():
        cg = Cgroup(hierarchy.version, dirs)
        if name[len(PREFIX):].partition("-")[2].startswith(STEP_LABEL):
            cg.kill()
        if all(_rmdir(path, wait=False) for path in dirs.values()):
            removed += 1
    return removed

