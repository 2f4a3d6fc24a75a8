"""The machines this user has set up, by name: `$XDG_CONFIG_HOME/layerbuild/machines.json`."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from layerbuild.errors import UsageError
from layerbuild.remote.ssh import SshTarget, parse_target

# Where a machine's installation lives on the host, relative to the login's home directory.
INSTALL_DIR = ".local/share/layerbuild-machine"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


@dataclass
class Machine:
    """A host set up by `machine create`: how to reach it and what was installed there."""

    name: str
    url: str
    identity: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    version: str = ""
    created: str = ""

    def target(self) -> SshTarget:
        return parse_target(self.url, identity=self.identity, options=self.options)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "layerbuild"


def _path() -> Path:
    return config_dir() / "machines.json"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"invalid machine name {name!r}",
                         hint="use letters, digits and . _ - (starting with a letter or digit), at most 63")
    return name


def load() -> dict[str, Machine]:
    """Every recorded machine by name (none yet: empty)."""
    try:
        raw = json.loads(_path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {_path()}: {exc}", hint="fix or remove the file") from None
    out: dict[str, Machine] = {}
    for item in raw.get("machines", []):
        try:
            machine = Machine(**item)
        except TypeError:
            raise UsageError(f"{_path()}: unreadable machine entry {item!r}", hint="fix or remove it") from None
        out[machine.name] = machine
    return out


def save(machines: dict[str, Machine]) -> None:
    """Write the records atomically (temp file + rename), readable by this user only (they name keys)."""
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": 1, "machines": [asdict(m) for m in sorted(machines.values(), key=lambda m: m.name)]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".machines-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def get(name: str) -> Machine:
    machines = load()
    if name not in machines:
        known = ", ".join(sorted(machines)) or "none yet"
        raise UsageError(f"no machine named {name!r}", hint=f"known machines: {known}; "
                         "create one with `layerbuild machine create NAME --ssh USER@HOST`")
    return machines[name]


def for_url(url: str) -> Machine | None:
    """The recorded machine at `url` (its identity and ssh options apply to `--host URL` too)."""
    want = parse_target(url).url
    for machine in load().values():
        if machine.target().url == want:
            return machine
    return None
