"""The typed API over the store's SQLite index: layers, images, tags, cache records, history, use, leases."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from typing import Any, cast

from layerbuild.errors import StoreError
from layerbuild.store.db import Database
from layerbuild.store.layout import scratch_owner
from layerbuild.store.records import (
    NO_RESULT,
    CacheRecord,
    HistoryRecord,
    ImageKind,
    ImageRecord,
    LayerRecord,
    Tag,
)

# Reads refresh last-use times at most this often per subject, so a busy build does not turn every
# cache hit into a write transaction that competes for the one write lock.
TOUCH_INTERVAL_S = 60.0

_LAYER_COLS = "digest, diff_id, size, diff_size, media_type, created"
_CACHE_COLS = "key, kind, result, metadata, created, last_used"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Index:
    """Typed reads and writes of the index. Writes are single transactions; see `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # layers -----------------------------------------------------------------------------------

    def put_layer(self, digest: str, diff_id: str, size: int, diff_size: int, media_type: str) -> LayerRecord:
        """Record a layer blob; idempotent (an existing row is kept as it is)."""
        with self.db.write() as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO layers ({_LAYER_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
                (digest, diff_id, size, diff_size, media_type, time.time()),
            )
            row = conn.execute(f"SELECT {_LAYER_COLS} FROM layers WHERE digest = ?", (digest,)).fetchone()
        return LayerRecord(*row)

    def get_layer(self, digest: str) -> LayerRecord | None:
        with self.db.read() as conn:
            row = conn.execute(f"SELECT {_LAYER_COLS} FROM layers WHERE digest = ?", (digest,)).fetchone()
        return LayerRecord(*row) if row else None

    def layers_by_diff_id(self, diff_id: str) -> tuple[LayerRecord, ...]:
        """Every stored variant (zstd, gzip, ...) of the layer `diff_id`, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_LAYER_COLS} FROM layers WHERE diff_id = ? ORDER BY created, digest", (diff_id,)
            ).fetchall()
        return tuple(LayerRecord(*r) for r in rows)

    def list_layers(self) -> tuple[LayerRecord, ...]:
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {_LAYER_COLS} FROM layers ORDER BY digest").fetchall()
        return tuple(LayerRecord(*r) for r in rows)

    # manifests, indexes, configs -----------------------------------------------------------------

    def put_image(
        self, digest: str, kind: ImageKind, media_type: str, size: int, refs: Iterable[str]
    ) -> ImageRecord:
        """Record a manifest/index/config blob and what it references (blob digests or diff_ids)."""
        if kind not in ("manifest", "index", "config"):
            raise StoreError(f"unknown image record kind {kind!r}")
        refs = tuple(dict.fromkeys(refs))
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO images (digest, kind, media_type, size, created) VALUES (?, ?, ?, ?, ?)",
                (digest, kind, media_type, size, time.time()),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO refs (parent, child) VALUES (?, ?)", [(digest, r) for r in refs]
            )
        record = self.get_image(digest)
        assert record is not None
        return record

    def get_image(self, digest: str) -> ImageRecord | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT digest, kind, media_type, size, created FROM images WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None:
                return None
            refs = _refs(conn, digest)
        return ImageRecord(row[0], cast(ImageKind, row[1]), row[2], row[3], row[4], refs)

    def list_images(self, kind: ImageKind | None = None) -> tuple[ImageRecord, ...]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT digest, kind, media_type, size, created FROM images"
                + (" WHERE kind = ?" if kind else "")
                + " ORDER BY digest",
                (kind,) if kind else (),
            ).fetchall()
            return tuple(
                ImageRecord(r[0], cast(ImageKind, r[1]), r[2], r[3], r[4], _refs(conn, r[0])) for r in rows
            )

    # tags ------------------------------------------------------------------------------------------

    def set_tag(self, name: str, digest: str) -> Tag:
        """Point `name` (`name:tag`) at a manifest, replacing what it pointed at before."""
        if not name:
            raise StoreError("empty tag name")
        now = time.time()
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO tags (name, digest, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
                (name, digest, now),
            )
        return Tag(name, digest, now)

    def get_tag(self, name: str) -> Tag | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT name, digest, updated FROM tags WHERE name = ?", (name,)).fetchone()
        return Tag(*row) if row else None

    def delete_tag(self, name: str) -> bool:
        with self.db.write() as conn:
            return conn.execute("DELETE FROM tags WHERE name = ?", (name,)).rowcount > 0

    def list_tags(self) -> tuple[Tag, ...]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT name, digest, updated FROM tags ORDER BY name").fetchall()
        return tuple(Tag(*r) for r in rows)

    # repo digests ----------------------------------------------------------------------------------

    def set_repo_digest(self, name: str, digest: str, manifest: str, platform: str = "") -> None:
        """Record that the registry's `name@digest` (for `platform`, when `digest` is an index) is the
        store's manifest `manifest`; replaces an earlier record of the same triple."""
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO repo_digests (name, digest, platform, manifest, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name, digest, platform) DO UPDATE SET manifest = excluded.manifest, "
                "updated = excluded.updated",
                (name, digest, platform, manifest, time.time()),
            )

    def get_repo_digest(self, name: str, digest: str, platform: str | None = None) -> str | None:
        """The store's manifest recorded for `name@digest` (for `platform`; any, newest first, if None)."""
        query = "SELECT manifest FROM repo_digests WHERE name = ? AND digest = ?"
        params: tuple[str, ...] = (name, digest)
        if platform is not None:
            query += " AND platform = ?"
            params += (platform,)
        with self.db.read() as conn:
            row = conn.execute(query + " ORDER BY updated DESC", params).fetchone()
        return str(row[0]) if row else None

    def repo_digests_of(self, manifest: str) -> tuple[tuple[str, str], ...]:
        """(name, digest) of every record pointing at the store's manifest `manifest`, newest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT name, digest FROM repo_digests WHERE manifest = ? ORDER BY updated DESC, name, digest",
                (manifest,),
            ).fetchall()
        return tuple((str(r[0]), str(r[1])) for r in rows)

    # cache records -------------------------------------------------------------------------------

    def put_cache(self, key: str, kind: str, result: str, metadata: Any = None) -> CacheRecord:
        """Record (or replace) the result of the step with cache key `key` (`NO_RESULT` if it made no layer)."""
        now = time.time()
        meta = _json({} if metadata is None else metadata)
        with self.db.write() as conn:
            conn.execute(
                f"INSERT INTO cache ({_CACHE_COLS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                "kind = excluded.kind, result = excluded.result, metadata = excluded.metadata, "
                "last_used = excluded.last_used",
                (key, kind, result, meta, now, now),
            )
            row = conn.execute(f"SELECT {_CACHE_COLS} FROM cache WHERE key = ?", (key,)).fetchone()
        return CacheRecord(*row)

    def get_cache(self, key: str, *, touch: bool = True) -> CacheRecord | None:
        """The record for `key`, marking it used (for LRU pruning) unless `touch` is false."""
        with self.db.read() as conn:
            row = conn.execute(f"SELECT {_CACHE_COLS} FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        record = CacheRecord(*row)
        now = time.time()
        if touch and record.last_used < now - TOUCH_INTERVAL_S:
            with self.db.write() as conn:
                conn.execute("UPDATE cache SET last_used = max(last_used, ?) WHERE key = ?", (now, key))
        return record

    def hold_cache(self, key: str, lease_id: str) -> CacheRecord | None:
        """The record for `key`, its result added to the lease `lease_id` in the same transaction.

        A hit returned here stays usable: a concurrent prune either committed before (and the record
        is gone: a miss) or sees the lease and keeps the result and everything it reaches."""
        with self.db.read() as conn:
            found = conn.execute("SELECT 1 FROM cache WHERE key = ?", (key,)).fetchone()
        if found is None:
            return None
        now = time.time()
        with self.db.write() as conn:
            row = conn.execute(f"SELECT {_CACHE_COLS} FROM cache WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            record = CacheRecord(*row)
            if record.result != NO_RESULT:
                conn.execute(
                    "INSERT OR IGNORE INTO lease_refs (lease_id, subject) VALUES (?, ?)", (lease_id, record.result)
                )
            if record.last_used < now - TOUCH_INTERVAL_S:
                conn.execute("UPDATE cache SET last_used = max(last_used, ?) WHERE key = ?", (now, key))
        return record

    def delete_cache(self, key: str) -> bool:
        with self.db.write() as conn:
            return conn.execute("DELETE FROM cache WHERE key = ?", (key,)).rowcount > 0

    def has_cache(self) -> bool:
        """Whether the store holds any cache record at all (a fresh store, as a CI runner's, has none)."""
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM cache LIMIT 1").fetchone() is not None

    def list_cache(self) -> tuple[CacheRecord, ...]:
        with self.db.read() as conn:
            rows = conn.execute(f"SELECT {_CACHE_COLS} FROM cache ORDER BY last_used, key").fetchall()
        return tuple(CacheRecord(*r) for r in rows)

    # build history ---------------------------------------------------------------------------------

    def put_history(self, dockerfile_id: str, target: str, steps: Any) -> HistoryRecord:
        """Remember the per-step keys of the latest build of (`dockerfile_id`, `target`)."""
        now = time.time()
        text = _json(steps)
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO history (dockerfile_id, target, steps, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(dockerfile_id, target) DO UPDATE SET steps = excluded.steps, updated = excluded.updated",
                (dockerfile_id, target, text, now),
            )
        return HistoryRecord(dockerfile_id, target, text, now)

    def get_history(self, dockerfile_id: str, target: str) -> HistoryRecord | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT dockerfile_id, target, steps, updated FROM history WHERE dockerfile_id = ? AND target = ?",
                (dockerfile_id, target),
            ).fetchone()
        return HistoryRecord(*row) if row else None

    # last use ----------------------------------------------------------------------------------------

    def touch(self, subject: str, at: float | None = None) -> None:
        """Note that `subject` (a blob digest or a snapshot's diff_id) was just used; throttled."""
        now = time.time() if at is None else at
        last = self.last_use(subject)
        if last is not None and last >= now - TOUCH_INTERVAL_S:
            return
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO last_use (subject, at) VALUES (?, ?) "
                "ON CONFLICT(subject) DO UPDATE SET at = max(at, excluded.at)",
                (subject, now),
            )

    def last_use(self, subject: str) -> float | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT at FROM last_use WHERE subject = ?", (subject,)).fetchone()
        return float(row[0]) if row else None

    # leases --------------------------------------------------------------------------------------------

    def create_lease(self, ttl: float) -> str:
        # The owner in the id lets prune end the lease of a process that died before its ttl did.
        lease_id = f"{scratch_owner()}-{os.urandom(16).hex()}"
        with self.db.write() as conn:
            conn.execute("INSERT INTO leases (id, expires) VALUES (?, ?)", (lease_id, time.time() + ttl))
        return lease_id

    def add_to_lease(self, lease_id: str, subjects: Iterable[str]) -> None:
        with self.db.write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO lease_refs (lease_id, subject) VALUES (?, ?)",
                [(lease_id, s) for s in subjects],
            )

    def renew_lease(self, lease_id: str, ttl: float) -> None:
        with self.db.write() as conn:
            conn.execute("UPDATE leases SET expires = ? WHERE id = ?", (time.time() + ttl, lease_id))

    def release_lease(self, lease_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM leases WHERE id = ?", (lease_id,))

    # blobs seen in registries -----------------------------------------------------------------------

    def note_blob_repos(self, repository: str, digests: Iterable[str]) -> None:
        """Record that `repository` (`domain/path`) holds the blobs `digests`."""
        now = time.time()
        with self.db.write() as conn:
            conn.executemany(
                "INSERT INTO blob_repos (digest, repository, seen) VALUES (?, ?, ?) "
                "ON CONFLICT(digest, repository) DO UPDATE SET seen = excluded.seen",
                [(d, repository, now) for d in dict.fromkeys(digests)],
            )

    def blob_repos(self, digest: str) -> tuple[str, ...]:
        """Repositories (`domain/path`) blob `digest` was seen in, most recently seen first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT repository FROM blob_repos WHERE digest = ? ORDER BY seen DESC, repository", (digest,)
            ).fetchall()
        return tuple(r[0] for r in rows)


def _refs(conn: sqlite3.Connection, digest: str) -> tuple[str, ...]:
    rows = conn.execute("SELECT child FROM refs WHERE parent = ? ORDER BY child", (digest,)).fetchall()
    return tuple(r[0] for r in rows)
