"""Space accounting and garbage collection: `df` and `prune` over one store root."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.errors import StoreError
from layerbuild.store import caches
from layerbuild.store.chunks import packs_in_use, recipe_packs
from layerbuild.store.db import LOW_SPACE, free_space, no_space_error
from layerbuild.store.graph import Graph, Plan, plan_eviction
from layerbuild.store.layout import (
    flocked,
    fsync_dir,
    keep_reserve,
    release_reserve,
)
from layerbuild.store.scratch import clean_temp
from layerbuild.store.snapshots import remove_tree

if TYPE_CHECKING:
    from layerbuild.store.store import Store

# A blob put (or re-put) this recently, or anything read this recently, is never pruned: it covers
# the window between a writer's put and the index row or tag that will reference it, for writers
# that do not hold a lease.
DEFAULT_GRACE_S = 3600.0
# Overrides the default grace period (seconds), e.g. to prune a store where everything is recent.
GRACE_ENV = "LAYERBUILD_PRUNE_GRACE"

_KIND_LABEL = {"layer": "layers", "config": "configs", "manifest": "manifests", "index": "manifests"}
# The JSON caches the index does not track (see caches.py), as `df` names them.
_CACHE_LABEL = {"parsed": "parsed dockerfiles", "fastpath": "no-op records"}


@dataclass(frozen=True)
class DfEntry:
    """Space used by one kind of thing, and how much of it a plain `prune` would free now."""

    kind: str
    count: int
    size: int
    reclaimable: int


@dataclass(frozen=True)
class DfReport:
    """What `df` shows: the store's space by kind."""

    entries: tuple[DfEntry, ...]

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries if e.kind != "cache records")

    @property
    def reclaimable(self) -> int:
        return sum(e.reclaimable for e in self.entries if e.kind != "cache records")


@dataclass(frozen=True)
class PruneReport:
    """What `prune` removed and how much space that freed; `remaining` is blobs + snapshots + cache
    files after. `cache_files` counts the parse and no-op cache files `--all` cleared."""

    cache_records: int
    blobs: tuple[str, ...]
    snapshots: tuple[str, ...]
    temp_files: int
    reclaimed: int
    remaining: int
    cache_files: int = 0


def default_grace() -> float:
    value = os.environ.get(GRACE_ENV)
    if value:
        try:
            grace = float(value)
        except ValueError:
            raise StoreError(f"{GRACE_ENV}={value!r} is not a number of seconds",
                             hint=f"unset it, or set it to e.g. {int(DEFAULT_GRACE_S)}") from None
        if grace >= 0:
            return grace
    return DEFAULT_GRACE_S


def _blob_stats(store: Store) -> dict[str, tuple[int, float]]:
    stats: dict[str, tuple[int, float]] = {}
    for digest in store.blobs.list():
        # What the digest itself takes: a recipe's own small file (its frames are blobs of their own).
        stored = store.blobs.stored_size(digest)
        if stored is not None:
            stats[digest] = stored
    return stats


def _snapshot_sizes(store: Store) -> dict[str, int]:
    return {d: store.snapshots.size(d) for d in store.snapshots.diff_ids()}


def _recent(graph: Graph, stats: dict[str, tuple[int, float]], now: float, grace: float) -> set[str]:
    pins = {d for d, (_, mtime) in stats.items() if now - mtime < grace}
    pins.update(s for s, at in graph.last_use.items() if now - at < grace)
    return pins


def _plan(
    store: Store,
    graph: Graph,
    snaps: dict[str, int],
    now: float,
    grace: float,
    *,
    all_records: bool,
    keep_storage: int | None,
) -> tuple[Plan, dict[str, tuple[int, float]], set[str]]:
    stats = _blob_stats(store)
    pins = _recent(graph, stats, now, grace)
    plan = plan_eviction(
        graph,
        {d: s for d, (s, _) in stats.items()},
        snaps,
        all_records=all_records,
        keep_storage=keep_storage,
        extra_pins=pins,
    )
    # Snapshots of layers the index does not know at all are rebuildable leftovers.
    plan.nodes.update(d for d in snaps if d not in graph.edges and d not in pins)
    # The packs holding the frames of layers kept as recipes live as long as a recipe names them.
    named = recipe_packs(store.layout)
    while True:
        keep = packs_in_use(named, plan.nodes) & plan.nodes
        if not keep:
            break
        plan.nodes -= keep
    return plan, stats, pins


def prune(
    store: Store, *, all: bool = False, keep_storage: int | None = None, grace: float | None = None
) -> PruneReport:
    """Drop cache records and blobs no tag reaches, least recently used first, until under `keep_storage`.

    `all` makes every cache record a candidate, not only those whose result no tag reaches, and
    clears the parse and no-op caches (they are rebuilt on demand).
    Never removes anything reachable from a tag or a live lease, nor a blob put or anything used in
    the last `grace` seconds. Runs inside one index write transaction while holding the gc lock
    exclusively, so no put can commit and no reference can be added while it decides and deletes.
    """
    grace = default_grace() if grace is None else grace
    temp = clean_temp(store)
    full = store.db.full or free_space(store.layout.root) < LOW_SPACE
    # A full disk: give the reserve back so that this transaction can be written.
    if full and (release_reserve(store.layout) or store.db.full):
        store.db.reopen()
    snaps = _snapshot_sizes(store)  # walked before taking locks: it can be slow
    removed_blobs: list[str] = []
    reclaimed = 0
    if store.db.full:
        # Still no room to write the index: fine if there is nothing to remove, else say so.
        with store.db.read() as conn:
            now = time.time()
            graph = Graph.load(conn, now)
            plan, stats, _ = _plan(store, graph, snaps, now, grace, all_records=all, keep_storage=keep_storage)
        if plan.cache_keys or plan.nodes:
            raise no_space_error(store.layout.index_db)
        remaining = sum(s for s, _ in stats.values()) + sum(snaps.values())
        return PruneReport(0, (), (), len(temp), 0, remaining + sum(u.size for u in caches.usage(store.layout)))
    with store.db.write() as conn, flocked(store.layout.gc_lock):
        now = time.time()
        graph = Graph.load(conn, now)
        plan, stats, _ = _plan(store, graph, snaps, now, grace, all_records=all, keep_storage=keep_storage)
        # Files first: on a full disk, the space they free is what lets the row deletions be written.
        for node in sorted(plan.nodes):
            # Not BlobStore.delete: that takes the gc lock we already hold.
            if node in stats and store.blobs.delete_locked(node):
                removed_blobs.append(node)
                reclaimed += stats[node][0]
        conn.executemany("DELETE FROM cache WHERE key = ?", [(k,) for k in plan.cache_keys])
        for node in sorted(plan.nodes):
            for sql in (
                "DELETE FROM layers WHERE digest = ?",
                "DELETE FROM images WHERE digest = ?",
                "DELETE FROM refs WHERE parent = ?",
                "DELETE FROM last_use WHERE subject = ?",
            ):
                conn.execute(sql, (node,))
        conn.executemany("DELETE FROM leases WHERE id = ?", [(i,) for i in graph.expired_leases])
        # Out of sight before the rows' removal commits, so no build finds a snapshot of a layer
        # that is gone (and then loses it); the trees are deleted after the lock is released.
        detached: list[tuple[str, Path]] = []
        for diff_id in sorted(plan.nodes & snaps.keys()):
            doomed = store.snapshots.detach(diff_id)
            if doomed is not None:
                detached.append((diff_id, doomed))
    if removed_blobs:
        fsync_dir(store.layout.blobs)
        fsync_dir(store.layout.recipes)
    removed_snaps: list[str] = []
    for diff_id, doomed in detached:
        remove_tree(doomed)
        removed_snaps.append(diff_id)
        reclaimed += snaps[diff_id]
    keep_reserve(store.layout)
    cache_files = 0
    if all:
        cache_files, cache_bytes = caches.clear(store.layout)
        reclaimed += cache_bytes
    remaining = sum(s for d, (s, _) in stats.items() if d not in removed_blobs)
    remaining += sum(s for d, s in snaps.items() if d not in removed_snaps)
    remaining += sum(u.size for u in caches.usage(store.layout))
    return PruneReport(
        cache_records=len(plan.cache_keys),
        blobs=tuple(removed_blobs),
        snapshots=tuple(removed_snaps),
        temp_files=len(temp),
        reclaimed=reclaimed,
        remaining=remaining,
        cache_files=cache_files,
    )


def df(store: Store, *, grace: float | None = None) -> DfReport:
    """Space by kind (blob kinds, snapshots, cache records, the parse and no-op caches, index) and what
    a plain `prune` would free (the parse and no-op caches only go with `prune --all`)."""
    grace = default_grace() if grace is None else grace
    snaps = _snapshot_sizes(store)
    with store.db.read() as conn:
        now = time.time()
        graph = Graph.load(conn, now)
        plan, stats, pins = _plan(store, graph, snaps, now, grace, all_records=False, keep_storage=None)
    rows: dict[str, list[int]] = {k: [0, 0, 0] for k in ("layers", "configs", "manifests", "other blobs")}
    frames = packs_in_use(recipe_packs(store.layout), set())  # blobs holding frames of layers kept as recipes
    for digest, (size, _) in stats.items():
        kind = "layer" if digest in frames else graph.kinds.get(digest, "")
        row = rows[_KIND_LABEL.get(kind, "other blobs")]
        row[0] += 1
        row[1] += size
        row[2] += size if digest in plan.nodes else 0
    entries = [DfEntry(kind, *row) for kind, row in rows.items()]
    entries.append(
        DfEntry(
            "snapshots",
            len(snaps),
            sum(snaps.values()),
            sum(s for d, s in snaps.items() if d in plan.nodes),
        )
    )
    # Cache records own the blobs only they keep alive; shown for information, not added to totals.
    pinned = graph.closure([*graph.tags.values(), *graph.leased, *pins])
    held = graph.closure(r for _, r, _ in graph.cache) - pinned
    entries.append(
        DfEntry(
            "cache records",
            len(graph.cache),
            sum(stats[d][0] for d in held if d in stats),
            sum(stats[d][0] for d in held & plan.nodes if d in stats),
        )
    )
    entries.extend(DfEntry(_CACHE_LABEL[u.name], u.count, u.size, 0) for u in caches.usage(store.layout))
    index_size = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            index_size += os.stat(f"{store.layout.index_db}{suffix}").st_size
        except FileNotFoundError:
            pass
    entries.append(DfEntry("index", 1, index_size, 0))
    return DfReport(tuple(entries))
