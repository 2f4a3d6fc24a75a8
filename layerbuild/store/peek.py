"""Cheap read-only looks into a store (no migrations, no write locks), for no-op fast paths."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from layerbuild.store.layout import Layout


def blob_exists(root: Path, digest: str) -> bool:
    """Whether the blob `digest` is in the store, as a file or as a recipe of frames (an edited
    COPY layer, store/chunks.py); contents are fsck's business."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256":
        return False
    layout = Layout(root)
    return (layout.blobs / hexpart).is_file() or (layout.recipes / hexpart).is_file()


def tag_targets(root: Path, names: Iterable[str]) -> dict[str, str | None]:
    """The manifest digest each tag points at (None if unknown), or {} if the index can't be read."""
    path = root / "index.db"
    names = list(names)
    if not path.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return {}
    try:
        out: dict[str, str | None] = {name: None for name in names}
        for name in names:
            row = conn.execute("SELECT digest FROM tags WHERE name = ?", (name,)).fetchone()
            out[name] = row[0] if row else None
        return out
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
