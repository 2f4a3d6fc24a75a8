"""One network namespace shared by all the containers of a project: the fallback for project networks
where bridges and veth pairs cannot be made (rootless: no CAP_NET_ADMIN in the host's user namespace).

A shared namespace is a directory `<root>/sharedns/<project>/`: `holder.json` (the pid and start time
of the process that holds the namespace, `sandbox.hold_namespace`, nsinit's "hold" mode) and
`members/<container id>.json` (the names a container answers to, its pid and its /etc/hosts on the
host side). Containers enter the namespace (nsinit's "join") instead of making their own, so they
reach each other on 127.0.0.1, as the containers of a podman pod do: every member's /etc/hosts maps
every member's names to 127.0.0.1, rewritten in place as containers come and go. Published ports are
forwarded from the host into this namespace's loopback. The project's networks are not kept apart
here, and two services cannot listen on the same port.

`LAYERBUILD_NETWORK_BACKEND` chooses: `bridge` (project networks, `bridge.py`), `shared` (this), or
`auto` (the default: bridges when possible, else this).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import UsageError
from layerbuild.runtime.network import LOCALHOST
from layerbuild.store.layout import flocked, proc_start_time

SHARED = "sharedns"
BACKEND_ENV = "LAYERBUILD_NETWORK_BACKEND"
NOTICE = ("the project's containers share one network namespace (no bridge networks without CAP_NET_ADMIN "
          "in the host's user namespace): service names resolve to 127.0.0.1 and networks are not kept apart")


@dataclass(frozen=True)
class Holder:
    """The process that keeps a project's shared namespace."""

    dir: Path
    pid: int
    pid_start: int | None

    def alive(self) -> bool:
        return self.pid > 0 and self.pid_start is not None and proc_start_time(self.pid) == self.pid_start

    @property
    def netns(self) -> Path:
        return Path(f"/proc/{self.pid}/ns/net")

    @property
    def userns(self) -> Path | None:
        """Its user namespace when that is not ours (rootless), which a forwarder must enter first."""
        path = Path(f"/proc/{self.pid}/ns/user")
        return path if os.readlink(path) != os.readlink("/proc/self/ns/user") else None


def bridges_possible() -> bool:
    """Whether bridges and veth pairs can be made: root in the host's initial user namespace."""
    if os.geteuid() != 0:
        return False
    try:
        first = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return False
    return first[:3] == ["0", "0", "4294967295"]


def wanted() -> bool:
    """Whether project networks fall back to a shared namespace ($LAYERBUILD_NETWORK_BACKEND)."""
    backend = os.environ.get(BACKEND_ENV, "auto") or "auto"
    if backend not in ("auto", "bridge", "shared"):
        raise UsageError(f"invalid {BACKEND_ENV}={backend!r}", hint="use auto, bridge or shared")
    return backend == "shared" or (backend == "auto" and not bridges_possible())


def _dir(root: Path, project: str) -> Path:
    return root / SHARED / project


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    base = root / SHARED
    base.mkdir(parents=True, exist_ok=True)
    with flocked(base / ".lock"):
        yield


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def find(root: Path, project: str) -> Holder | None:
    """The live holder of the project's namespace, if any."""
    d = _dir(root, project)
    try:
        data = json.loads((d / "holder.json").read_text())
        holder = Holder(d, int(data["pid"]), data["pid_start"])
    except (OSError, ValueError, KeyError):
        return None
    return holder if holder.alive() else None


def ensure(root: Path, project: str) -> Holder:
    """The project's shared namespace, made (with its holder) if it does not exist or its holder died."""
    from layerbuild.runtime.sandbox import hold_namespace

    with _locked(root):
        holder = find(root, project)
        if holder is not None:
            return holder
        d = _dir(root, project)
        if d.exists():  # what a dead holder left: its members were in a namespace that is gone
            shutil.rmtree(d, ignore_errors=True)
        (d / "members").mkdir(parents=True)
        pid = hold_namespace(d / "holder.log")
        holder = Holder(d, pid, proc_start_time(pid))
        _write_json(d / "holder.json", {"pid": pid, "pid_start": holder.pid_start})
        return holder


def remove(root: Path, project: str) -> bool:
    """Kill the holder (the namespace goes with it once no member is left in it) and drop the record."""
    with _locked(root):
        d = _dir(root, project)
        if not d.exists():
            return False
        holder = find(root, project)
        if holder is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(holder.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(holder.pid, 0)  # our child when this process made it: no zombie left
        shutil.rmtree(d, ignore_errors=True)
        return True


def join(root: Path, project: str, *, container: str, pid: int, names: list[str], hosts: Path) -> None:
    """Record `container` as a member and rewrite every member's hosts file."""
    with _locked(root):
        d = _dir(root, project)
        _write_json(d / "members" / f"{container}.json",
                    {"names": names, "pid": pid, "pid_start": proc_start_time(pid), "hosts": os.fspath(hosts)})
        _refresh(d)


def leave(root: Path, project: str, container: str) -> None:
    with _locked(root):
        d = _dir(root, project)
        path = d / "members" / f"{container}.json"
        if path.exists():
            path.unlink()
            _refresh(d)


def _refresh(d: Path) -> None:
    live = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(d / "members"), key=lambda e: e.name):
            with contextlib.suppress(OSError, ValueError, KeyError):
                m = json.loads(Path(entry.path).read_text())
                if proc_start_time(m["pid"]) == m["pid_start"]:
                    live.append(m)
    names = list(dict.fromkeys(n for m in live for n in m["names"]))
    text = LOCALHOST + (f"127.0.0.1\t{' '.join(names)}\n" if names else "")
    for m in live:
        with contextlib.suppress(OSError), open(m["hosts"], "r+") as f:  # in place: it is bind-mounted
            f.truncate(0)
            f.write(text)
