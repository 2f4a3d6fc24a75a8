"""The scratch a build or command leaves when it dies: temp blobs, RUN upper dirs and filesystem
views in the store's tmp, downloads and unpacked archives in the system's temp dir. Every build
sweeps it as it starts (`clean_temp`), so this module imports only what that sweep needs (not the
pruning of maintenance.py: its graph and caches cost a build's start)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.errors import StoreError
from layerbuild.store.layout import (
    SCRATCH_PREFIXES,
    SYSTEM_SCRATCH_PREFIXES,
    scratch_owner_dead,
    try_remove_orphan,
)
from layerbuild.store.snapshots import remove_tree

if TYPE_CHECKING:
    from layerbuild.store.store import Store

__all__ = ["clean_scratch", "clean_system_scratch", "clean_temp"]


def clean_temp(store: Store) -> list[Path]:
    """Remove temp files and trees of writers that died (their locks are free); live ones stay."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(store.layout.tmp))
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if entry.name.startswith("blob-") and try_remove_orphan(Path(entry.path)):
            removed.append(Path(entry.path))
    removed.extend(store.snapshots.clean_orphans())
    removed.extend(clean_scratch(store.layout.tmp))
    removed.extend(clean_system_scratch())
    return removed


def clean_system_scratch() -> list[Path]:
    """Remove what builds that died left in the system's temp dir (downloads, unpacked archives);
    directories of other users, which we may not remove, are left alone."""
    import tempfile

    return clean_scratch(Path(tempfile.gettempdir()), SYSTEM_SCRATCH_PREFIXES)


def clean_scratch(tmp: Path, prefixes: tuple[str, ...] = SCRATCH_PREFIXES) -> list[Path]:
    """Remove the scratch directories (RUN upper dirs, filesystem views, ...) of processes that died.

    A directory with something still mounted below it (an older version mounted views in the
    host's namespace) is unmounted first as root, and left alone if that fails: deleting through
    a mount would delete what it shows."""
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(tmp)
                   if scratch_owner_dead(e.name, prefixes) and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if _unmount_below(path):
            try:
                remove_tree(path)
            except StoreError:
                continue
            removed.append(path)
    return removed


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path) + "/"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return []
    # mountinfo escapes space, tab, newline and backslash as octal
    decoded = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p) for p in points]
    return [p for p in decoded if p.startswith(prefix) or p == str(path)]


def _unmount_below(path: Path) -> bool:
    """True once nothing is mounted at or below `path`."""
    points = _mounts_below(path)
    if points and os.geteuid() == 0:
        import subprocess  # (root, and only where a dead build left a mount)

        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
        points = _mounts_below(path)
    return not points
