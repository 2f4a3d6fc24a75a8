"""The no-op fast path: when nothing a build reads has changed, answer from the last build's record.

A build's inputs are the Dockerfile, its ignore file, the options, the base images its FROM lines
named, and the files of the context and of the named contexts that are directories (a Dockerfile
that names a URL or a git source never takes this path). The fingerprint covers all of them, each
context file by its full stat (device, inode, size, mtime, ctime, mode) as the stat cache does. If the fingerprint equals the
one recorded after the last successful build of the same Dockerfile and target, and that build's
image, blobs and tags are all still in the store, its outputs are this build's outputs: every step
is a cache hit. Anything else — one touched file, a pruned blob, a moved tag — takes the full path,
which then decides step by step. This module imports little, so a no-op costs about the stats.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import xxhash

from layerbuild.context.ignore import load_matcher
from layerbuild.errors import UsageError
from layerbuild.parser.limits import read_dockerfile
from layerbuild.reference import normalize_tag
from layerbuild.solve.report import BuildEvent, BuildResult
from layerbuild.store.layout import Layout, resolve_root
from layerbuild.store.peek import blob_exists, tag_targets
from layerbuild.worker.request import BuildRequest

VERSION = "fastpath-1"
# A remote source anywhere in the Dockerfile (ADD https://…, ADD git@…): such builds take the full path.
_REMOTE = re.compile(rb"://|git@", re.IGNORECASE)


def _record_path(root: Path, dockerfile: Path, target: str | None, key: str | None = None) -> Path:
    """The record of the last build of `dockerfile` (or, for a Dockerfile that came as a stream, of
    the StreamOrigin `key`) and `target`."""
    name = f"stream\0{key}" if key is not None else str(dockerfile.resolve())
    digest = xxhash.xxh3_128_hexdigest(f"{name}\0{target or ''}".encode())
    return Layout(root).fastpath / f"{digest}.json"


def fingerprint(
    context: Path, dockerfile: Path, options: Mapping[str, Any], version: str,
    named: Mapping[str, Path] | None = None,
) -> str | None:
    """The fingerprint of everything a build of `dockerfile` in `context` (and the named contexts
    that are directories, `named`) reads, or None if unsure."""
    h = xxhash.xxh3_128()
    h.update(f"{VERSION}\0{version}\0".encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    try:
        text = read_dockerfile(dockerfile)  # not a blocking read of a FIFO, nor an unbounded one
        if _REMOTE.search(text):
            return None  # ADD of a URL or a git repository reads something no stat can vouch for
        h.update(b"\0dockerfile\0" + text)
        matcher, ignore_file = load_matcher(context, dockerfile)
        if ignore_file is not None:
            h.update(b"\0ignore\0" + ignore_file.read_bytes())
    except (OSError, ValueError):
        return None
    except Exception:
        return None  # a bad ignore file: let the full path report it properly

    trees: list[tuple[str, Path, Any]] = [("", context, matcher)]
    try:
        for name, directory in sorted((named or {}).items()):
            named_matcher, named_ignore = load_matcher(directory, None)  # its own .dockerignore only
            h.update(f"\0context\0{name}\0{directory.resolve()}\0".encode("utf-8", "surrogateescape"))
            if named_ignore is not None:
                h.update(b"\0ignore\0" + named_ignore.read_bytes())
            trees.append((name, directory, named_matcher))
    except Exception:
        return None  # a missing directory or a bad ignore file: let the full path report it properly

    def walk(path: str, rel: str, parent: Any) -> None:
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            name = rel + entry.name
            excluded, info = matcher.matches(name, parent) if not matcher.empty else (False, None)
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if excluded and not (is_dir and matcher.may_reinclude_below(name)):
                continue
            h.update(f"{name}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0"
                     f"{st.st_ino}\0{st.st_dev}\n".encode("utf-8", "surrogateescape"))
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(entry.path).encode("utf-8", "surrogateescape"))
            elif is_dir:
                walk(entry.path, name + "/", info)

    try:
        for label, directory, tree_matcher in trees:
            matcher = tree_matcher
            h.update(f"\0tree\0{label}\0".encode("utf-8", "surrogateescape"))
            walk(str(directory), "", None)
    except OSError:
        return None
    return h.hexdigest()


def lookup(root: Path, dockerfile: Path, target: str | None, fp: str, tags: tuple[str, ...], *,
           key: str | None = None) -> dict[str, Any] | None:
    """The last build's report if it answers this build (same fingerprint, outputs all still there)."""
    try:
        record = json.loads(_record_path(root, dockerfile, target, key).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != fp:
        return None
    blobs = record.get("blobs") or []
    if not blobs or not all(blob_exists(root, d) for d in blobs):
        return None
    manifest = record.get("manifest")
    bases: dict[str, str] = record.get("bases") or {}
    try:
        names = [normalize_tag(t) for t in tags]
    except UsageError:
        return None  # the full path reports a bad tag properly
    targets = tag_targets(root, set(names) | set(bases))
    if any(targets.get(name) != manifest for name in names):
        return None
    if any(targets.get(ref) != digest for ref, digest in bases.items()):
        return None
    report = record.get("report")
    return report if isinstance(report, dict) else None


def save(root: Path, dockerfile: Path, target: str | None, fp: str, *, manifest: str, blobs: list[str],
         bases: Mapping[str, str], report: Mapping[str, Any], key: str | None = None) -> None:
    """Record a successful build for the next one (written to a temp file, then renamed)."""
    path = _record_path(root, dockerfile, target, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = dict(report)
    cached["steps"] = [dict(s, cached=True, reason=None, duration_s=0.0) for s in report.get("steps", [])]
    summary = dict(report.get("summary", {}))
    counted = summary.get("cached", 0) + summary.get("executed", 0)
    summary.update(cached=counted, executed=0, hit_rate=1.0)
    cached["summary"] = summary
    data = {"fingerprint": fp, "manifest": manifest, "blobs": blobs, "bases": dict(bases), "report": cached}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def check(request: BuildRequest, root: Path, started: float) -> tuple[dict[str, Any] | None, str | None]:
    """The replayed report if the last build answers `request` (else None), and the fingerprint
    taken, which the full path records after the build (None when the fast path may not be used)."""
    from layerbuild import __version__

    options = request.fastpath_options()
    if options is None or not request.context.is_dir():
        return None, None
    path = request.dockerfile_path()
    fp = request.fingerprint or fingerprint(request.context, path, options, __version__, request.local_contexts())
    if fp is None:
        return None, None
    report = lookup(root, path, request.target, fp, request.tags,
                    key=request.stream.key if request.stream is not None else None)
    return (replay(report, started) if report is not None else None), fp


def answer(request: BuildRequest, root: Path, started: float,
           on_event: Callable[[BuildEvent], None] | None = None) -> tuple[BuildResult | None, str | None]:
    """`check`, as typed values: the last build's result if it answers `request` (its steps and the
    end replayed to `on_event` as `step.cached` and `build.finished` events), and the fingerprint."""
    report, fp = check(request, root, started)
    if report is None:
        return None, fp
    result = BuildResult.from_json(report)
    if on_event is not None:
        for step in result.steps:
            on_event(BuildEvent("step.cached", step))
        on_event(BuildEvent("build.finished", result=result))
    return result, fp


def replay(report: Mapping[str, Any], started: float) -> dict[str, Any]:
    """The recorded all-hits report, with this run's duration."""
    out = dict(report)
    out["summary"] = dict(report.get("summary", {}), duration_s=round(time.monotonic() - started, 3))
    return out


__all__ = ["answer", "check", "fingerprint", "lookup", "replay", "resolve_root", "save"]
