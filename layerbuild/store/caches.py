"""The JSON caches under the root that the index does not track (parsed Dockerfiles, no-op records).

Each file is a disposable answer that its reader can recompute: losing one costs a re-parse or a
full build path, never a wrong result. So `prune --all` may clear them, and `fsck` removes a file it
cannot read back as a JSON object instead of repairing it. Writers put a file in place by writing a
dot-named temp file and renaming it; a temp file is left alone until it is old enough to be a crashed
writer's leftover.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from layerbuild.store.layout import Layout

STALE_TEMP_S = 3600.0


@dataclass(frozen=True)
class CacheUsage:
    """One cache directory: its name under the root, how many files it holds and their bytes."""

    name: str
    count: int
    size: int


@dataclass(frozen=True)
class BadCacheFile:
    """A cache file that does not read back as a JSON object, and whether it was removed."""

    path: Path
    detail: str
    removed: bool


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_temp(entry: os.DirEntry[str]) -> bool:
    return entry.name.startswith(".") and entry.name.endswith(".tmp")


def _stale(entry: os.DirEntry[str], now: float) -> bool:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_S
    except FileNotFoundError:
        return False


def _size(entry: os.DirEntry[str]) -> int:
    try:
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def usage(layout: Layout) -> tuple[CacheUsage, ...]:
    """Files and bytes in each cache directory (temp files of live writers included: they take space)."""
    out = []
    for directory in layout.json_caches:
        entries = _entries(directory)
        out.append(CacheUsage(directory.name, len(entries), sum(_size(e) for e in entries)))
    return tuple(out)


def clear(layout: Layout) -> tuple[int, int]:
    """Remove every cache file (not a live writer's fresh temp file); returns (files, bytes) removed."""
    files = size = 0
    now = time.time()
    for directory in layout.json_caches:
        for entry in _entries(directory):
            if _is_temp(entry) and not _stale(entry, now):
                continue
            bytes_ = _size(entry)
            if _remove(Path(entry.path)):
                files += 1
                size += bytes_
    return files, size


def check(layout: Layout, *, repair: bool) -> tuple[int, tuple[BadCacheFile, ...], tuple[Path, ...]]:
    """Read back every cache file: (files checked, the bad ones, stale temp files removed).

    A bad file (not a regular `*.json` file, unreadable, not JSON, not an object) is removed with
    `repair`; a temp file of a dead writer is removed silently, like the store's own temp files.
    """
    checked = 0
    bad: list[BadCacheFile] = []
    temp: list[Path] = []
    now = time.time()
    for directory in layout.json_caches:
        for entry in _entries(directory):
            path = Path(entry.path)
            if _is_temp(entry):
                if repair and _stale(entry, now) and _remove(path):
                    temp.append(path)
                continue
            detail = _problem(entry)
            checked += 1
            if detail is not None:
                bad.append(BadCacheFile(path, detail, repair and _remove(path)))
    return checked, tuple(bad), tuple(temp)


def _problem(entry: os.DirEntry[str]) -> str | None:
    """Why `entry` is not a readable cache file, or None if it is one."""
    if not entry.name.endswith(".json") or not entry.is_file(follow_symlinks=False):
        return "not a JSON cache file" if os.path.lexists(entry.path) else None
    try:
        with open(entry.path, encoding="utf-8", errors="surrogateescape") as f:
            value = json.load(f)
    except FileNotFoundError:
        return None  # replaced or cleared meanwhile: nothing wrong
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    return None if isinstance(value, dict) else "not a JSON object"
