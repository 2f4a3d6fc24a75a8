"""The build-context stat cache table: load one tree's rows in one query, write changes in one transaction."""

from __future__ import annotations

from collections.abc import Iterable

from layerbuild.store.db import Database

# (dev, ino, size, mtime_ns, ctime_ns, mode, content hash, fingerprint)
StatRow = tuple[int, int, int, int, int, int, str, str]


def load_stat_cache(db: Database, context: str) -> dict[bytes, StatRow]:
    """Every cached row of `context`, keyed by relative path. The content hash is not loaded (it is ''):
    a hit needs only the stat and the fingerprint, and the cache is read on every build."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, fingerprint FROM context_stat WHERE context = ?",
            (context,),
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5], r[6], "", r[7]) for r in rows}


def save_stat_cache(
    db: Database,
    context: str,
    upserts: Iterable[tuple[bytes, StatRow]],
    deletes: Iterable[bytes] = (),
    *,
    replace_all: bool = False,
) -> None:
    """Write changed rows and drop vanished ones in one transaction; `replace_all` first forgets the tree."""
    rows = [(context, path, *row) for path, row in upserts]
    gone = [(context, path) for path in deletes]
    if not rows and not gone and not replace_all:
        return
    with db.write() as conn:
        if replace_all:
            conn.execute("DELETE FROM context_stat WHERE context = ?", (context,))
        if gone:
            conn.executemany("DELETE FROM context_stat WHERE context = ? AND path = ?", gone)
        if rows:
            conn.executemany(
                "INSERT OR REPLACE INTO context_stat "
                "(context, path, dev, ino, size, mtime_ns, ctime_ns, mode, hash, fingerprint) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )


def forget_stat_cache(db: Database, context: str | None = None) -> int:
    """Drop the rows of one tree (or of all trees); returns how many went. The cache is only a hint."""
    with db.write() as conn:
        if context is None:
            cur = conn.execute("DELETE FROM context_stat")
        else:
            cur = conn.execute("DELETE FROM context_stat WHERE context = ?", (context,))
        return cur.rowcount
