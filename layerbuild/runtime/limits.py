"""Resource limits as docker's flags spell them, and the cgroup files (v2 and v1) that apply them.

Pure: parsing and checking (`--memory 64m`, `--memory-swap -1`, `--cpus 1.5`, `--pids-limit`) and the
(file, value) pairs to write; `cgroups` does the writing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from layerbuild.errors import UsageError

# The processes a container may have unless asked otherwise (podman's default).
DEFAULT_PIDS_LIMIT = 2048
CFS_PERIOD_US = 100_000
MIN_MEMORY = 6 << 20  # docker's minimum, below which a container cannot even start

# Docker's default device policy: create any node (mknod), open only these (type, major, minor).
ALLOWED_DEVICES = (
    ("c", "*", "*", "m"), ("b", "*", "*", "m"),
    ("c", "1", "3", "rwm"), ("c", "1", "5", "rwm"), ("c", "1", "7", "rwm"), ("c", "1", "8", "rwm"),
    ("c", "1", "9", "rwm"), ("c", "5", "0", "rwm"), ("c", "5", "1", "rwm"), ("c", "5", "2", "rwm"),
    ("c", "136", "*", "rwm"), ("c", "10", "200", "rwm"),
)


@dataclass(frozen=True)
class Limits:
    """Resource limits as docker's flags give them. `memory_swap` is memory plus swap (-1: unlimited
    swap; None: as much swap as memory, docker's default); `pids` None is the default limit and -1
    none at all."""

    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    pids: int | None = None

    def requested(self) -> bool:
        """Whether the caller asked for a limit (the default pids limit alone is not asking)."""
        return self.memory is not None or self.memory_swap is not None or self.cpus is not None \
            or self.pids is not None

    def pids_max(self) -> int | None:
        if self.pids is None:
            return DEFAULT_PIDS_LIMIT
        return None if self.pids <= 0 else self.pids


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)(?:i?b)?$|^(\d+(?:\.\d+)?) ?b$", re.IGNORECASE)


def parse_memory(text: str, flag: str = "--memory") -> int:
    """Docker's memory sizes: `64m`, `1.5g`, `512k`, `1024` (bytes), binary multiples."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise UsageError(f"invalid {flag} {text!r}", hint="give a size such as 64m, 512k or 1g")
    number, unit = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), "")
    return int(float(number) * _UNITS[unit.lower()])


def parse_limits(memory: str | None = None, memory_swap: str | None = None, cpus: str | float | None = None,
                 pids: str | int | None = None) -> Limits:
    """Limits from docker's spellings, checked as docker checks them."""
    mem = parse_memory(memory) if memory else None
    if mem is not None and mem < MIN_MEMORY:
        raise UsageError(f"--memory {memory} is too small", hint="the minimum memory limit is 6m")
    swap = None
    if memory_swap:
        swap = -1 if memory_swap.strip() == "-1" else parse_memory(memory_swap, "--memory-swap")
        if mem is None:
            raise UsageError("--memory-swap needs --memory", hint="set --memory too (or drop --memory-swap)")
        if swap != -1 and swap < mem:
            raise UsageError(f"--memory-swap {memory_swap} is smaller than --memory {memory}",
                               hint="--memory-swap is memory plus swap: give at least --memory, or -1")
    count = None
    if cpus is not None and str(cpus) != "":
        try:
            count = float(cpus)
        except ValueError:
            raise UsageError(f"invalid --cpus {cpus!r}", hint="give a number of CPUs such as 1.5") from None
        available = os.cpu_count() or 1
        if not 0.01 <= count <= available:
            raise UsageError(f"invalid --cpus {cpus}: the range of CPUs is from 0.01 to {available}",
                               hint=f"this machine has {available} CPUs")
    limit = None
    if pids is not None and str(pids) != "":
        try:
            limit = int(pids)
        except ValueError:
            raise UsageError(f"invalid --pids-limit {pids!r}", hint="give a number (-1 or 0: unlimited)") from None
        limit = -1 if limit <= 0 else limit
    return Limits(mem, swap, count, limit)


def v2_files(limits: Limits) -> list[tuple[str, str]]:
    """The cgroup v2 interface files (name, value) that set `limits`, in the order to write them."""
    out = []
    if limits.memory is not None:
        out.append(("memory.max", str(limits.memory)))
        swap = limits.memory_swap
        out.append(("memory.swap.max", "max" if swap == -1 else str((swap or 2 * limits.memory) - limits.memory)))
    if limits.cpus is not None:
        out.append(("cpu.max", f"{round(limits.cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}"))
    pids = limits.pids_max()
    out.append(("pids.max", "max" if pids is None else str(pids)))
    return out


def v1_files(limits: Limits, devices: bool = True) -> list[tuple[str, str, str]]:
    """The cgroup v1 files (controller, name, value) that set `limits` and the device allow-list."""
    out = []
    if limits.memory is not None:
        out.append(("memory", "memory.limit_in_bytes", str(limits.memory)))
        swap = limits.memory_swap
        out.append(("memory", "memory.memsw.limit_in_bytes", "-1" if swap == -1 else str(swap or 2 * limits.memory)))
    if limits.cpus is not None:
        out.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
        out.append(("cpu", "cpu.cfs_quota_us", str(round(limits.cpus * CFS_PERIOD_US))))
    pids = limits.pids_max()
    out.append(("pids", "pids.max", "max" if pids is None else str(pids)))
    if devices:
        out.append(("devices", "devices.deny", "a"))
        out.extend(("devices", "devices.allow", f"{t} {major}:{minor} {access}")
                   for t, major, minor, access in ALLOWED_DEVICES)
    return out


def needed(limits: Limits) -> set[str]:
    """The controllers `limits` cannot do without."""
    need = set()
    if limits.memory is not None:
        need.add("memory")
    if limits.cpus is not None:
        need.add("cpu")
    if limits.pids is not None and limits.pids > 0:
        need.add("pids")
    return need
