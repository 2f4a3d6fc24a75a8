"""Container records under `<root>/containers/<id>/`: config, state, exit code, log; liveness from /proc.

Files, each written whole (temp + rename): `config.json` (what was asked for, never changes),
`state.json` (pid and its start time, the helper's too, start/finish times, status), `exit` (the
exit code, written by the helper when the process ends) and `log` (stdout+stderr of a detached run).
The recorded status is only a hint: whether a container runs is decided by its pid *and* the start
time /proc gives for that pid, so a dead monitor or a recycled pid never makes `ps` lie.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from layerbuild.errors import UsageError
from layerbuild.store.layout import proc_start_time
from layerbuild.store.snapshots import remove_tree

_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
               "nifty", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zealous")
_NOUNS = ("babbage", "curie", "darwin", "euler", "fermat", "gauss", "hopper", "knuth", "lovelace",
          "noether", "pascal", "ritchie", "shannon", "turing", "wozniak")


def format_created(seconds: float) -> str:
    """RFC 3339 in UTC, whole seconds, as image configs write `created`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class ContainerNotFoundError(UsageError):
    """No container answers to the name or id given."""




def alive(pid: int, start: int | None) -> bool:
    return pid > 0 and start is not None and proc_start_time(pid) == start


@dataclass
class Container:
    """One container: its fixed config and its mutable state."""

    dir: Path
    id: str
    name: str
    image: str
    image_id: str
    argv: list[str]
    created: str
    config: dict[str, Any] = field(default_factory=dict)
    pid: int = 0
    pid_start: int | None = None
    helper_pid: int = 0
    helper_start: int | None = None
    started: str | None = None
    finished: str | None = None
    recorded_status: str = "created"
    cgroup: dict[str, Any] | None = None  # cgroups.Cgroup.to_json() of the running container
    end_reason: str | None = None  # why it ended, when its cgroup knows (e.g. killed: out of memory)
    forwarder_pid: int = 0  # the published ports' forwarder (ports.py), while it runs
    forwarder_start: int | None = None
    addresses: dict[str, str] = field(default_factory=dict)  # project network -> address there
    published: list[dict[str, Any]] = field(default_factory=list)  # the ports as bound, while it runs
    restarts: int = 0  # how often a restart policy started it again

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def log_path(self) -> Path:
        return self.dir / "log"

    @property
    def exit_path(self) -> Path:
        return self.dir / "exit"

    def exit_code(self) -> int | None:
        try:
            return int(self.exit_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        return alive(self.pid, self.pid_start)

    def status(self) -> str:
        """"running", "exited" or "created", decided from /proc and the exit file, not the record."""
        if self.exit_path.exists():
            return "exited"
        if self.running():
            return "running"
        if alive(self.helper_pid, self.helper_start):
            # The process is gone and its helper is about to write the exit code: give it a moment.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and not self.exit_path.exists():
                time.sleep(0.01)
        return "created" if self.recorded_status == "created" and not self.pid else "exited"

    def save(self) -> None:
        state = {k: getattr(self, k) for k in ("pid", "pid_start", "helper_pid", "helper_start", "started",
                                                "finished", "recorded_status", "cgroup", "end_reason", "forwarder_pid",
                                                "forwarder_start", "addresses", "restarts",
                                                "published")}
        _write_json(self.dir / "state.json", state)

    def to_json(self) -> dict[str, Any]:
        """The `ps --json` entry (DESIGN.md contract)."""
        status = self.status()
        return {"id": self.id, "name": self.name, "image": self.image, "command": command_text(self.argv),
                "status": status, "exit_code": self.exit_code() if status == "exited" else None,
                "created": self.created}


def command_text(argv: list[str]) -> str:
    return " ".join(a if a and not any(c in a for c in " \t\"'\\$") else json.dumps(a) for a in argv)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def containers_dir(root: Path) -> Path:
    return root / "containers"


def create(root: Path, *, name: str | None, image: str, image_id: str, argv: list[str],
           config: dict[str, Any]) -> Container:
    """A new container record; `name` must be unused (default: a generated one)."""
    base = containers_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    # Checking that the name is free and taking it is one step: under a lock that dies with its holder.
    lock = os.open(base / ".names.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        taken = {c.name: c for c in list_all(root)}
        if name is None:
            name = next(n for n in (_random_name() for _ in range(100)) if n not in taken)
        elif name in taken:
            raise UsageError(f'the container name "{name}" is already in use by container {taken[name].short_id}',
                             hint="remove that container (`layerbuild rm`) or pick another name")
        cid = os.urandom(32).hex()
        cdir = base / cid
        cdir.mkdir()
        c = Container(cdir, cid, name, image, image_id, argv, format_created(time.time()), config)
        c.save()
        _write_json(cdir / "config.json", {"id": cid, "name": name, "image": image, "image_id": image_id,
                                           "argv": argv, "created": c.created, "config": config})
    finally:
        os.close(lock)
    return c


def _choice(words: tuple[str, ...]) -> str:
    return words[int.from_bytes(os.urandom(4), "big") % len(words)]  # not `secrets`: its import costs more


def _random_name() -> str:
    return f"{_choice(_ADJECTIVES)}_{_choice(_NOUNS)}"


def load(cdir: Path) -> Container:
    cfg = json.loads((cdir / "config.json").read_text())
    c = Container(cdir, cfg["id"], cfg["name"], cfg["image"], cfg["image_id"], cfg["argv"], cfg["created"],
                  cfg.get("config", {}))
    try:
        state = json.loads((cdir / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    for key, value in state.items():
        if key in asdict(c):
            setattr(c, key, value)
    return c


def list_all(root: Path) -> list[Container]:
    """Every container, newest first."""
    out = []
    try:
        entries = list(os.scandir(containers_dir(root)))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.endswith(".removing"):
            continue  # being removed: its name is free again
        if entry.is_dir() and (Path(entry.path) / "config.json").exists():
            try:
                out.append(load(Path(entry.path)))
            except (OSError, ValueError, KeyError):
                continue  # half-created or half-removed: not a container
    out.sort(key=lambda c: (c.created, c.id), reverse=True)
    return out


def find(root: Path, ref: str) -> Container:
    """The container named `ref`, or whose id is or starts with `ref`."""
    everything = list_all(root)
    for c in everything:
        if ref in (c.name, c.id):
            return c
    matches = [c for c in everything if c.id.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"container id prefix {ref!r} is ambiguous", hint="give more characters")
    raise ContainerNotFoundError(f"no such container: {ref}")


def remove(c: Container) -> None:
    """Delete the container's directory (its upper dir included). The caller checks it is not running."""
    from layerbuild.runtime.cgroups import Cgroup

    cgroup = Cgroup.from_json(c.cgroup)
    if cgroup is not None:
        cgroup.remove()
    doomed = c.dir.with_name(c.dir.name + ".removing")
    os.rename(c.dir, doomed)  # gone from listings at once, even if deleting the tree takes a while
    remove_tree(doomed)


def apply_env(env: dict[str, str], overrides: Sequence[str]) -> None:
    """`-e K=V` sets K in `env`; `-e K` copies the caller's K when it has one (run and exec alike)."""
    for item in overrides:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid environment variable {item!r}", hint="write -e KEY=VALUE")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
