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
import operator
import os
import re
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import xxhash

from layerbuild.context.ignore import load_matcher
from layerbuild.errors import UsageError
from layerbuild.parser.limits import read_dockerfile
from layerbuild.reference import normalize_tag
from layerbuild.solve.report import BuildEvent, BuildResult
from layerbuild.store.layout import Layout, resolve_root
from layerbuild.store.peek import blob_exists, tag_targets
from layerbuild.worker.request import BuildRequest

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path
if TYPE_CHECKING:
    from typing import Any

VERSION = "fastpath-4"
# A file whose ctime is this close to a scan may change again without its stat showing it (a second
# write within the same clock tick: "racy git"), so its stat does not vouch for its content (as the
# context's stat cache, context/tree.py).
RACY_MARGIN_NS = 50_000_000

# Bytes a build's record may read to learn the keys of files the build itself did not read, and
# bytes the touch path may read before it leaves the build to the full path.
_LEARN_LIMIT = 64 << 20
_READ_LIMIT = 32 << 20  # about what the full path's start costs, at sha256's speed
# How many files a touch may read again (their rows in the side file stale), and what they may weigh,
# before it rewrites the side file: a few ms of reading at the next touch, against every row now.
_STALE_ROWS = 32
_STALE_ROWS_BYTES = 1 << 20

_IFMT, _IFDIR, _IFLNK, _IFREG = stat.S_IFMT(0o177777), stat.S_IFDIR, stat.S_IFLNK, stat.S_IFREG
# A remote source anywhere in the Dockerfile (ADD https://…, ADD git@…): such builds take the full path.
_REMOTE = re.compile(rb"://|git@", re.IGNORECASE)


def _record_path(root: Path, dockerfile: Path, target: str | None, key: str | None = None) -> Path:
    """The record of the last build of `dockerfile` (or, for a Dockerfile that came as a stream, of
    the StreamOrigin `key`) and `target`."""
    name = f"stream\0{key}" if key is not None else str(dockerfile.resolve())
    digest = xxhash.xxh3_128_hexdigest(f"{name}\0{target or ''}".encode())
    return Layout(root).fastpath / f"{digest}.json"


class Scan:
    """One look at a build's inputs: the stat fingerprint, and what the touch path and the record need.

    `entries` are (tree label, relative path, lstat, link target, stat line) of every entry the
    fingerprint covered (the stat line is what the fingerprint hashed of it); `keys` the content keys known so far of regular files, by (label, path); `racy` is set
    when a file's ctime is too close to the scan for its stat to vouch for its content (see
    RACY_MARGIN_NS): then the stat fingerprint is not recorded, and such files are hashed again."""

    __slots__ = ("content", "entries", "fingerprint", "header", "keys", "learned", "racy", "rows", "side",
                 "started_ns", "tried")

    def __init__(self, fingerprint: str, header: bytes, entries: list[tuple[str, str, os.stat_result, str, str]],
                 started_ns: int, racy: bool) -> None:
        self.fingerprint = fingerprint
        self.header = header
        self.entries = entries
        self.started_ns = started_ns
        self.racy = racy
        self.keys: dict[tuple[str, str], str] = {}
        self.tried = False  # the touch path was tried (a full build asks `check` twice)
        self.rows: Mapping[str, str] = {}  # the last record's side file, once read (see _load_stats)
        self.content: str | None = None  # the content fingerprint over `keys`, once computed
        self.learned = False  # a file read again now vouches for its key by its stat (see _content_pass)
        # The side file's rows (stat lines, keys) the touch path made with `content`, for the record
        # of the full build that follows when the content changed (see _content_pass).
        self.side: tuple[list[str], list[str]] | None = None


def fingerprint(
    context: Path, dockerfile: Path, options: Mapping[str, Any], version: str,
    named: Mapping[str, Path] | None = None,
) -> str | None:
    """The fingerprint of everything a build of `dockerfile` in `context` (and the named contexts
    that are directories, `named`) reads, or None if unsure."""
    taken = scan(context, dockerfile, options, version, named)
    return taken.fingerprint if taken is not None else None


def scan(
    context: Path, dockerfile: Path, options: Mapping[str, Any], version: str,
    named: Mapping[str, Path] | None = None,
) -> Scan | None:
    """`fingerprint`'s look at the inputs, with the entries it saw (None if unsure)."""
    started_ns = time.time_ns()
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
    header = h.digest()
    entries: list[tuple[str, str, os.stat_result, str, str]] = []
    lines: list[str] = []  # hashed at the end, at once
    racy_after = started_ns - RACY_MARGIN_NS
    racy = False
    label = ""

    add_entry, add_line = entries.append, lines.append
    by_name = operator.attrgetter("name")

    def walk(path: str, rel: str, parent: Any) -> None:
        nonlocal racy
        with os.scandir(path) as it:
            found = sorted(it, key=by_name)
        check = not matcher.empty
        for entry in found:
            name = rel + entry.name
            if check:
                excluded, info = matcher.matches(name, parent)
            else:
                excluded, info = False, None
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            kind = mode & _IFMT
            if excluded and not (kind == _IFDIR and matcher.may_reinclude_below(name)):
                continue
            line = f"{name}\0{mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\n"
            add_line(line)
            if kind == _IFDIR:
                add_entry((label, name, st, "", line))
                walk(entry.path, name + "/", info)
                continue
            link = ""
            if kind == _IFLNK:
                link = os.readlink(entry.path)
                add_line(link)
            if st.st_ctime_ns > racy_after:
                racy = True
            add_entry((label, name, st, link, line))

    try:
        for label, directory, tree_matcher in trees:
            matcher = tree_matcher
            lines.append(f"\0tree\0{label}\0")
            walk(str(directory), "", None)
    except OSError:
        return None
    h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return Scan(h.hexdigest(), header, entries, started_ns, racy)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int, int]:
    """What says a file is unchanged (context.tree's stat_key, without loading that module)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def file_key(rel: str, path: str, st: os.stat_result) -> str:
    """A regular file's content key: the build context's own fingerprint of it (contenthash: path,
    type, permission bits, size, content, capability), read now. Raises OSError or BuildError if the
    file is not the one `st` describes any more (gone, or changed while it was read)."""
    from layerbuild.context.contenthash import fingerprint as content_fingerprint
    from layerbuild.context.contenthash import hash_file, read_capability
    from layerbuild.errors import BuildError

    content, after = hash_file(path)
    if _stat_key(after) != _stat_key(st):
        raise BuildError(f"{rel!r} changed since it was looked at")
    return content_fingerprint(rel.encode("utf-8", "surrogateescape"), st.st_mode, st.st_size, content,
                               capability=read_capability(path))


def _read_record(root: Path, dockerfile: Path, target: str | None, key: str | None) -> dict[str, Any] | None:
    try:
        record = json.loads(_record_path(root, dockerfile, target, key).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _outputs_present(root: Path, record: Mapping[str, Any], tags: tuple[str, ...]) -> dict[str, Any] | None:
    """The record's report if its image, blobs, tags and bases are all still in the store."""
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


def lookup(root: Path, dockerfile: Path, target: str | None, fp: str, tags: tuple[str, ...], *,
           key: str | None = None) -> dict[str, Any] | None:
    """The last build's report if it answers this build (same fingerprint, outputs all still there)."""
    record = _read_record(root, dockerfile, target, key)
    if record is None or record.get("fingerprint") != fp:
        return None
    return _outputs_present(root, record, tags)


def _stats_path(record_path: Path) -> Path:
    return record_path.with_name(record_path.stem + ".stats.json")  # a JSON cache file, as fsck and df see it


def _row(label: str, line: str) -> str:
    """A side file row's name: the tree label and the file's stat line (which starts with its path)."""
    return f"{label}\0{line[:-1]}"


def _load_stats(path: Path, content: str) -> dict[str, str]:
    """The side file's content keys by row name (`_row`: label and stat line), of files whose stat
    vouches for their key. Two strings hold the rows (stat lines, keys; one per line) rather than a
    list of them: a build reads them with two splits, where JSON lists cost a parsed object each."""
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="surrogateescape"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("content") != content:
        return {}
    stats, keys = data.get("stats"), data.get("keys")
    if not isinstance(stats, str) or not isinstance(keys, str):
        return {}
    names = stats.split("\n")[:-1]  # every stat line ends with a newline
    values = keys.split("\n") if keys else []
    if len(names) != len(values):
        return {}
    return dict(zip(names, values, strict=True))


def _content_pass(taken: Scan, rows: Mapping[str, str], roots: Mapping[str, Path], *,
                  trees: Mapping[str, Any] | None = None, limit: int | None = None,
                  ) -> tuple[str, list[str], list[str], int, int] | None:
    """In one pass over the entries:
    - every regular file's content key into `taken.keys`: known already; else from the side file's
      row when its stat line is the file's; else, given the build's source `trees` by label, what
      the build read of it if its stat is the scanned one; else read now, at most `limit` bytes in
      all (default _READ_LIMIT: what the full path's start costs);
    - the content fingerprint: what the stat fingerprint covers, with every regular file's key
      instead of its times, inode and device;
    - the side file's rows: each regular file's stat line and key, for files whose ctime is older
      than the scan by RACY_MARGIN_NS, so that a later write shows in their stat (others, and names
      with a newline, are read again by the next build that needs them);
    - how many files and bytes were read now.
    None if a file could not be read as it was seen (gone, changed meanwhile), or if more would be
    read than `limit`."""
    from layerbuild.errors import BuildError

    keys = taken.keys
    limit = _READ_LIMIT if limit is None else limit
    budget = limit
    reread = 0
    have = trees or {}
    get, known = rows.get, keys.get
    trusted_before = taken.started_ns - RACY_MARGIN_NS
    lines = ["content\0"]
    stats: list[str] = []
    values: list[str] = []
    add, add_stat, add_value = lines.append, stats.append, values.append
    for label, rel, st, link, line in taken.entries:
        mode = st.st_mode
        kind = mode & _IFMT
        if kind == _IFREG:
            key = known((label, rel))
            if key is None:
                key = get(f"{label}\0{line[:-1]}")  # its row (_row), if its stat is the recorded one
                if key is None and have:
                    tree = have.get(label)
                    key = None if tree is None else tree.known_fingerprint(rel, _stat_key(st))
                if key is None:
                    budget -= st.st_size
                    reread += 1
                    if budget < 0 or label not in roots:
                        return None
                    try:
                        key = file_key(rel, os.path.join(roots[label], rel), st)
                    except (OSError, BuildError):
                        return None
                    if st.st_ctime_ns < trusted_before:
                        taken.learned = True
                keys[(label, rel)] = key
            if st.st_ctime_ns < trusted_before and "\n" not in rel and "\n" not in label:
                add_stat(f"{label}\0{line}")
                add_value(key)
        elif kind == _IFLNK:
            key = link
        else:
            key = f"{st.st_rdev}" if kind != _IFDIR else ""
        add(f"{label}\0{rel}\0{mode}\0{st.st_uid}\0{st.st_gid}\0{key}\n")
    h = xxhash.xxh3_128(taken.header)
    h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return h.hexdigest(), stats, values, reread, limit - budget


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8", errors="surrogateescape")
    os.replace(tmp, path)


def _write_stats(path: Path, stats: list[str], values: list[str], content: str) -> None:
    _write(path, json.dumps({"version": VERSION, "content": content, "stats": "".join(stats),
                             "keys": "\n".join(values)}))


def save(root: Path, dockerfile: Path, target: str | None, fp: str | Scan, *, manifest: str, blobs: list[str],
         bases: Mapping[str, str], report: Mapping[str, Any], key: str | None = None,
         trees: Mapping[str, Any] | None = None) -> None:
    """Record a successful build for the next one (written to a temp file, then renamed).

    Given the Scan taken before the build and the build's source `trees` by label (the context's
    `known_fingerprint` gives what the build read of a file whose stat is still the scanned one),
    the record also holds the inputs' content fingerprint, and its side file the files' stats and
    content keys, so that a build that finds only times changed may be answered (see `check`)."""
    path = _record_path(root, dockerfile, target, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = dict(report)
    cached["steps"] = [dict(s, cached=True, reason=None, duration_s=0.0) for s in report.get("steps", [])]
    summary = dict(report.get("summary", {}))
    counted = summary.get("cached", 0) + summary.get("executed", 0)
    summary.update(cached=counted, executed=0, hit_rate=1.0)
    cached["summary"] = summary
    taken = fp if isinstance(fp, Scan) else None
    content: str | None = None
    side: tuple[list[str], list[str]] | None = None
    if taken is not None and taken.side is not None and taken.content is not None:
        content, side = taken.content, taken.side  # every key known: made by check's touch pass
    elif taken is not None:
        # Every regular file's key for the record: known from the scan or the last side file, else
        # what the build read of it if its stat is still the scanned one, else read now if cheap.
        # None (no content fingerprint): the touch path stays closed until the next full build.
        got = _content_pass(taken, taken.rows, {label: Path(t.root) for label, t in (trees or {}).items()},
                            trees=trees or {}, limit=_LEARN_LIMIT)
        if got is not None:
            content, side = got[0], (got[1], got[2])
    stat_fp = fp if isinstance(fp, str) else (None if fp.racy else fp.fingerprint)
    data = {"fingerprint": stat_fp, "content": content, "header": taken.header.hex() if taken is not None else None,
            "manifest": manifest, "blobs": blobs,
            "bases": dict(bases), "report": cached}
    if content is not None and side is not None:  # first: the record it belongs to names it
        _write_stats(_stats_path(path), *side, content)
    _write(path, json.dumps(data))


def check(request: BuildRequest, root: Path, started: float) -> tuple[dict[str, Any] | None, Scan | None]:
    """The replayed report if the last build answers `request` (else None), and the Scan taken,
    which the full path records after the build (None when the fast path may not be used).

    The last build answers when the inputs' stat fingerprint is the recorded one (a no-op), or,
    when only stats moved (a touched file, a copy of the same content), when re-reading just the
    files whose stat differs from the side file gives the recorded content fingerprint: then the
    record is brought up to date, so the next no-op is answered by stats alone."""
    from layerbuild import __version__

    options = request.fastpath_options()
    if options is None or not request.context.is_dir():
        return None, None
    path = request.dockerfile_path()
    named = request.local_contexts()
    taken = request.fingerprint or scan(request.context, path, options, __version__, named)
    if taken is None:
        return None, None
    key = request.stream.key if request.stream is not None else None
    record = _read_record(root, path, request.target, key)
    if record is None:
        return None, taken
    if record.get("fingerprint") == taken.fingerprint and not taken.racy:
        report = _outputs_present(root, record, request.tags)
        return (replay(report, started) if report is not None else None), taken
    content = record.get("content")
    if taken.tried or not isinstance(content, str) or record.get("header") != taken.header.hex():
        return None, taken  # another Dockerfile, ignore file, option or version: no file needs reading
    taken.tried = True
    report = _outputs_present(root, record, request.tags)
    if report is None:
        return None, taken
    rows = taken.rows = _load_stats(_stats_path(_record_path(root, path, request.target, key)), content)
    roots = {"": request.context, **named}
    got = _content_pass(taken, rows, {label: Path(p) for label, p in roots.items()})
    if got is None:
        return None, taken
    taken.content, stats, values, reread, reread_bytes = got
    if taken.content != content:
        taken.side = (stats, values)
        return None, taken
    # Only stats moved: the record now vouches for these stats. Unless every file read again was
    # written just now (racy: its stat vouches for nothing yet): then the side file would only lose
    # rows that no longer match anyway, and the record could gain no stat fingerprint, so neither
    # is written (the next build reads those files again, as it would after the rewrite). The side
    # file is rewritten only once the files its stale rows send to be read again weigh something:
    # a stale row costs the next touch one small read (the same key), the rewrite all the rows.
    if taken.learned or not taken.racy:
        try:
            record_path = _record_path(root, path, request.target, key)
            if reread > _STALE_ROWS or reread_bytes > _STALE_ROWS_BYTES:
                _write_stats(_stats_path(record_path), stats, values, content)
            _write(record_path, json.dumps(dict(record, fingerprint=None if taken.racy else taken.fingerprint)))
        except OSError:
            pass  # a record, nothing more: the next build reads the files again
    return replay(report, started), taken


def answer(request: BuildRequest, root: Path, started: float,
           on_event: Callable[[BuildEvent], None] | None = None) -> tuple[BuildResult | None, Scan | None]:
    """`check`, as typed values: the last build's result if it answers `request` (its steps and the
    end replayed to `on_event` as `step.cached` and `build.finished` events), and the Scan taken."""
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


__all__ = ["Scan", "answer", "check", "file_key", "fingerprint", "lookup", "replay",
           "resolve_root", "save", "scan"]
