"""Reachability over the index: what tags, leases and cache records keep alive, and LRU eviction plans."""

from __future__ import annotations

import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from layerbuild.store.layout import owner_dead
from layerbuild.store.records import NO_RESULT


@dataclass
class Graph:
    """A consistent read of the index's reference edges, taken inside one transaction.

    Nodes are blob digests and layer diff_ids: a manifest refers to its config and layer blobs, a
    config to the diff_ids it lists, a diff_id to every stored blob of that layer, and a layer blob
    back to its diff_id (so its snapshot lives as long as it does).
    """

    tags: dict[str, str]
    edges: dict[str, set[str]]
    kinds: dict[str, str]  # digest -> layer | manifest | index | config
    cache: list[tuple[str, str, float]]  # (key, result, last_used), least recently used first
    leased: set[str]
    last_use: dict[str, float]
    expired_leases: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, conn: sqlite3.Connection, now: float | None = None) -> Graph:
        now = time.time() if now is None else now
        edges: dict[str, set[str]] = defaultdict(set)
        kinds: dict[str, str] = {}
        for parent, child in conn.execute("SELECT parent, child FROM refs"):
            edges[parent].add(child)
        for digest, diff_id in conn.execute("SELECT digest, diff_id FROM layers"):
            edges[diff_id].add(digest)
            edges[digest].add(diff_id)
            kinds[digest] = "layer"
        for digest, kind in conn.execute("SELECT digest, kind FROM images"):
            kinds[digest] = kind
        tags = dict(conn.execute("SELECT name, digest FROM tags").fetchall())
        cache = [
            (k, r, float(t))
            for k, r, t in conn.execute("SELECT key, result, last_used FROM cache ORDER BY last_used, key")
        ]
        # A lease whose owner died (see store.layout.owner_dead) ends now rather than at its expiry.
        dead = {
            i for (i,) in conn.execute("SELECT id FROM leases WHERE expires > ?", (now,))
            if owner_dead(i.split("-", 1)[0])
        }
        leased = {
            s
            for (i, s) in conn.execute(
                "SELECT lease_id, subject FROM lease_refs JOIN leases ON leases.id = lease_refs.lease_id "
                "WHERE expires > ?",
                (now,),
            )
            if i not in dead
        }
        expired = [i for (i,) in conn.execute("SELECT id FROM leases WHERE expires <= ?", (now,))]
        expired.extend(sorted(dead))
        last_use = {s: float(t) for s, t in conn.execute("SELECT subject, at FROM last_use")}
        return cls(dict(tags), dict(edges), kinds, cache, leased, last_use, expired)

    def closure(self, roots: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack.extend(self.edges.get(node, ()))
        return seen

    def pinned(self) -> set[str]:
        """What nothing may remove: everything reachable from a tag or an unexpired lease."""
        return self.closure([*self.tags.values(), *self.leased])


@dataclass(frozen=True)
class Unit:
    """One thing prune may evict: a cache record (`key`), or an unreferenced blob (`key` is None)."""

    at: float
    key: str | None
    root: str


@dataclass
class Plan:
    """What an eviction would remove: cache keys, then nodes (blobs and diff_ids) nobody keeps alive."""

    cache_keys: list[str] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)


def plan_eviction(
    graph: Graph,
    present: dict[str, int],
    snapshot_sizes: dict[str, int],
    *,
    all_records: bool,
    keep_storage: int | None,
    extra_pins: Iterable[str] = (),
) -> Plan:
    """Choose what to drop, least recently used first, until storage is under `keep_storage`.

    `present` maps each blob on disk to its size. Candidates are the cache records whose result is
    not pinned (all records with `all_records`) and blobs on disk that nothing references. A node is
    freed once no pinned root and no remaining record reaches it; pinned nodes are never freed.
    `extra_pins` are further roots (blobs inside their grace period, snapshots in use).
    """
    pinned = graph.closure([*graph.tags.values(), *graph.leased, *extra_pins])
    units: list[Unit] = []
    holders: dict[str, int] = defaultdict(int)  # node -> how many live units reach it
    reach: dict[Unit, set[str]] = {}
    for key, result, last_used in graph.cache:
        closure = graph.closure([result]) - pinned
        unit = Unit(last_used, key, result)
        # A record of a step that made no layer holds nothing and costs a row: kept unless `all_records`.
        if all_records or (result != NO_RESULT and result not in pinned):
            units.append(unit)
            reach[unit] = closure
            for node in closure:
                holders[node] += 1
        # A record whose result is pinned costs nothing to keep and is kept unless `all_records`.
    for digest in present:
        if digest not in pinned and holders.get(digest, 0) == 0:
            unit = Unit(graph.last_use.get(digest, 0.0), None, digest)
            units.append(unit)
            reach[unit] = graph.closure([digest]) - pinned
            for node in reach[unit]:
                holders[node] += 1
    units.sort(key=lambda u: (u.at, u.key is not None, u.key or u.root))

    def size(node: str) -> int:
        return present.get(node, 0) + snapshot_sizes.get(node, 0)

    total = sum(present.values()) + sum(snapshot_sizes.values())
    plan = Plan()
    for unit in units:
        if keep_storage is not None and total <= keep_storage:
            break
        if unit.key is not None:
            plan.cache_keys.append(unit.key)
        for node in reach[unit]:
            holders[node] -= 1
            if holders[node] == 0 and node not in plan.nodes:
                plan.nodes.add(node)
                total -= size(node)
    return plan
