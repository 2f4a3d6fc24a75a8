"""`fsck`: verify every blob's digest and every index reference; quarantine bad blobs, drop dangling rows."""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.errors import StoreError
from layerbuild.store import caches, chunks
from layerbuild.store.db import LOW_SPACE, free_space
from layerbuild.store.layout import flocked, fsync_dir
from layerbuild.store.records import NO_RESULT
from layerbuild.store.scratch import clean_temp

if TYPE_CHECKING:
    import sqlite3

    from layerbuild.store.store import Store

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class FsckProblem:
    """One thing found wrong: what kind, about what, the details, and what fsck did about it."""

    kind: str
    subject: str
    detail: str
    action: str


@dataclass(frozen=True)
class FsckReport:
    """The outcome of `fsck`; callers exit 1 unless `ok`. Removed temp files of dead writers are not problems."""

    problems: tuple[FsckProblem, ...]
    blobs_checked: int
    temp_removed: tuple[str, ...]
    cache_files_checked: int = 0
    # True when the disk was full: the store was checked and nothing was repaired.
    read_only: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(store: Store, *, repair: bool = True) -> FsckReport:
    """Check the whole store. With `repair`, quarantine bad blobs under `quarantine/`, drop index rows
    that point at anything missing (tags, cache records, layer and image rows) and remove unreadable
    files of the parse and no-op caches, so the next build simply rebuilds what was lost."""
    problems: list[FsckProblem] = []
    temp = clean_temp(store) if repair else []
    if repair and store.db.full and free_space(store.layout.root) >= LOW_SPACE:
        store.db.reopen()  # what clean_temp freed may be enough to write again
    read_only = repair and store.db.full
    repair = repair and not read_only
    try:
        with store.db.read() as conn:
            check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    except StoreError as exc:
        check = [exc.message]
    if check != ["ok"]:
        problems.append(FsckProblem("index", str(store.layout.index_db), "; ".join(check[:5]), "none"))
    checked = _check_blobs(store, problems, repair)
    checked += _check_recipes(store, problems, repair)
    try:
        _check_index(store, problems, repair)
    except StoreError as exc:  # a damaged index: say so, and leave it as it is for the user to save
        if check == ["ok"]:
            problems.append(FsckProblem("index", str(store.layout.index_db), exc.message, "none"))
    cache_files, bad, stale = caches.check(store.layout, repair=repair)
    for item in bad:
        action = "removed" if item.removed else "none"
        subject = str(item.path.relative_to(store.root))
        problems.append(FsckProblem("corrupt cache file", subject, item.detail, action))
    temp.extend(stale)
    return FsckReport(tuple(problems), checked, tuple(str(p) for p in temp), cache_files, read_only)


def _check_blobs(store: Store, problems: list[FsckProblem], repair: bool) -> int:
    try:
        entries = sorted(os.scandir(store.layout.blobs), key=lambda e: e.name)
    except FileNotFoundError:
        return 0
    checked = 0
    for entry in entries:
        path = Path(entry.path)
        if not _HEX_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
            action = _quarantine(store, path, None) if repair else "none"
            problems.append(
                FsckProblem("stray file", entry.name, "not a blob name or not a regular file", action)
            )
            continue
        digest = "sha256:" + entry.name
        try:
            actual, ino = _hash_file(path)
        except FileNotFoundError:
            continue  # pruned while we looked
        checked += 1
        if actual != digest:
            action = _quarantine(store, path, ino) if repair else "none"
            problems.append(FsckProblem("corrupt blob", digest, f"content hashes to {actual}", action))
    return checked


def _check_recipes(store: Store, problems: list[FsckProblem], repair: bool) -> int:
    """Every recipe readable, its packs present (after `_check_blobs` quarantined damaged ones) and its
    frames, read from them, hashing to its digest; a bad recipe is quarantined, so its layer's rows go."""
    checked = 0
    for digest in sorted(chunks.recipe_digests(store.layout)):
        path = chunks.recipe_path(store.layout, digest)
        try:
            ino = os.stat(path).st_ino
            recipe = chunks.read_recipe(store.layout, digest)
        except FileNotFoundError:
            continue
        except chunks.RecipeError as exc:
            action = _quarantine(store, path, ino, "recipe-") if repair else "none"
            problems.append(FsckProblem("corrupt recipe", digest, exc.message, action))
            continue
        if recipe is None:
            continue
        missing = sorted(p for p in recipe.packs if not store.layout.blob_path(p).is_file())
        if missing:
            action = _quarantine(store, path, ino, "recipe-") if repair else "none"
            problems.append(FsckProblem("missing frames", digest, f"its frames in {missing[0]} are gone", action))
            continue
        if recipe.self_contained:
            continue  # its frames are its own blob file, which `_check_blobs` verified
        h = hashlib.sha256()
        try:
            with chunks.open_recipe(store.layout, recipe) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            actual = "sha256:" + h.hexdigest()
            detail = "" if actual == digest else f"its frames hash to {actual}"
        except chunks.RecipeError as exc:
            detail = exc.message
        except FileNotFoundError:
            continue  # pruned while we looked
        checked += 1
        if detail:
            action = _quarantine(store, path, ino, "recipe-") if repair else "none"
            problems.append(FsckProblem("corrupt recipe", digest, detail, action))
    return checked


def _hash_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        ino = os.fstat(f.fileno()).st_ino
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest(), ino


def _quarantine(store: Store, path: Path, ino: int | None, prefix: str = "") -> str:
    dest = store.layout.quarantine / f"{prefix}{path.name}.{int(time.time())}.{os.getpid()}"
    with flocked(store.layout.gc_lock):
        try:
            # Only move the very file we judged: it may have been pruned and re-put meanwhile.
            if ino is not None and os.lstat(path).st_ino != ino:
                return "none (replaced meanwhile)"
            os.rename(path, dest)
        except FileNotFoundError:
            return "none (gone meanwhile)"
    fsync_dir(path.parent)
    return f"moved to {dest.relative_to(store.root)}"


def _check_index(store: Store, problems: list[FsckProblem], repair: bool) -> None:
    if repair:
        with store.db.write() as conn:
            _check_rows(store, conn, problems, repair=True)
    else:
        with store.db.read() as conn:
            _check_rows(store, conn, problems, repair=False)


def _check_rows(store: Store, conn: sqlite3.Connection, problems: list[FsckProblem], *, repair: bool) -> None:
    present = set(store.blobs.list())
    action = "row dropped" if repair else "none"

    def drop(sql: str, *args: str) -> None:
        if repair:
            conn.execute(sql, args)

    for digest, diff_id in conn.execute("SELECT digest, diff_id FROM layers").fetchall():
        if digest not in present:
            problems.append(FsckProblem("missing blob", digest, f"layer {diff_id} has no blob", action))
            drop("DELETE FROM layers WHERE digest = ?", digest)
    layers = {d for (d,) in conn.execute("SELECT diff_id FROM layers")} if repair else None
    if layers is None:
        layers = {
            diff for digest, diff in conn.execute("SELECT digest, diff_id FROM layers") if digest in present
        }

    def exists(node: str) -> bool:
        return node in present or node in layers

    # Images can reference images (an index its manifests), so dropping one may break another.
    images = dict(conn.execute("SELECT digest, kind FROM images").fetchall())
    refs: dict[str, list[str]] = {}
    for parent, child in conn.execute("SELECT parent, child FROM refs"):
        refs.setdefault(parent, []).append(child)
    broken: set[str] = set()
    changed = True
    while changed:
        changed = False
        for digest, kind in images.items():
            if digest in broken:
                continue
            if digest not in present:
                detail = f"{kind} has no blob"
            else:
                missing = [c for c in refs.get(digest, []) if not exists(c) or c in broken]
                if not missing:
                    continue
                detail = f"{kind} references missing {', '.join(sorted(missing)[:3])}"
            broken.add(digest)
            changed = True
            problems.append(FsckProblem("dangling reference", digest, detail, action))
    for digest in sorted(broken):
        drop("DELETE FROM images WHERE digest = ?", digest)
        drop("DELETE FROM refs WHERE parent = ?", digest)

    for name, digest in conn.execute("SELECT name, digest FROM tags").fetchall():
        if digest not in present or digest in broken:
            problems.append(
                FsckProblem("dangling tag", name, f"points at missing or broken {digest}", action)
            )
            drop("DELETE FROM tags WHERE name = ?", name)
    for key, result in conn.execute("SELECT key, result FROM cache").fetchall():
        if result == NO_RESULT:
            continue  # a step that made no layer: nothing to dangle
        if not exists(result) or result in broken:
            problems.append(FsckProblem("dangling cache record", key, f"result {result} is missing", action))
            drop("DELETE FROM cache WHERE key = ?", key)
