"""The typed index API: layers, images, tags, cache records, history, last use, leases, schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from layerbuild.digest import sha256_digest
from layerbuild.errors import StoreError
from layerbuild.store import MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, CacheRecord, LayerRecord, Store, Tag
from layerbuild.store import index as index_module
from layerbuild.store.db import SCHEMA_VERSION, Database

D1, D2, D3 = (sha256_digest(x) for x in (b"1", b"2", b"3"))


def test_wal_mode_and_schema_version(store: Store) -> None:
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.schema_version() == SCHEMA_VERSION


@pytest.mark.store_corrupted  # index rows without blobs
def test_layers_keep_digest_and_diff_id_apart(store: Store) -> None:
    zstd = store.index.put_layer(D1, D3, 10, 30, MEDIA_LAYER_ZSTD)
    gzip = store.index.put_layer(D2, D3, 12, 30, MEDIA_LAYER_GZIP)
    assert isinstance(zstd, LayerRecord)
    assert store.index.get_layer(D1) == zstd
    assert set(store.index.layers_by_diff_id(D3)) == {zstd, gzip}
    assert store.index.put_layer(D1, D3, 99, 99, MEDIA_LAYER_ZSTD) == zstd  # idempotent
    with pytest.raises(AttributeError):
        zstd.size = 1  # type: ignore[misc]


@pytest.mark.store_corrupted  # index rows without blobs
def test_images_and_refs(store: Store) -> None:
    rec = store.index.put_image(D1, "manifest", "m", 5, [D2, D3, D2])
    assert rec.refs == tuple(sorted((D2, D3)))
    assert store.index.get_image(D1) == rec
    assert store.index.list_images("config") == ()
    with pytest.raises(StoreError):
        store.index.put_image(D2, "bogus", "m", 5, [])  # type: ignore[arg-type]


def test_tags(store: Store) -> None:
    store.index.set_tag("app:latest", D1)
    tag = store.index.set_tag("app:latest", D2)
    assert isinstance(tag, Tag)
    assert store.index.get_tag("app:latest") == tag
    assert [t.name for t in store.index.list_tags()] == ["app:latest"]
    assert store.index.delete_tag("app:latest") is True
    assert store.index.get_tag("app:latest") is None


def test_cache_records_and_touch(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = store.index.put_cache("k" * 32, "layer", D1, {"created_by": "RUN x", "n": [1, 2]})
    assert isinstance(rec, CacheRecord)
    assert rec.metadata == {"created_by": "RUN x", "n": [1, 2]}
    store.db.conn.execute("UPDATE cache SET last_used = 1")
    monkeypatch.setattr(index_module, "TOUCH_INTERVAL_S", 0.0)
    got = store.index.get_cache("k" * 32)
    assert got is not None and got.result == D1
    again = store.index.get_cache("k" * 32, touch=False)
    assert again is not None and again.last_used > 1
    assert store.index.get_cache("missing") is None
    assert store.index.delete_cache("k" * 32) is True


def test_history(store: Store) -> None:
    assert store.index.get_history("df1", "") is None
    store.index.put_history("df1", "", [{"key": "a"}])
    store.index.put_history("df1", "", [{"key": "b"}])
    rec = store.index.get_history("df1", "")
    assert rec is not None and rec.steps == [{"key": "b"}]


def test_touch_is_throttled(store: Store) -> None:
    store.index.touch(D1, at=1000.0)
    assert store.index.last_use(D1) == 1000.0
    store.index.touch(D1, at=1010.0)  # within the interval: no write
    assert store.index.last_use(D1) == 1000.0
    store.index.touch(D1, at=5000.0)
    assert store.index.last_use(D1) == 5000.0


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Database(path).schema_version()


def test_migrations_hook_runs_new_steps_once(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    calls: list[int] = []
    Database(path, [lambda c: calls.append(1)]).schema_version()
    db = Database(path, [lambda c: calls.append(1), lambda c: calls.append(2)])
    assert db.schema_version() == 2
    Database(path, [lambda c: calls.append(1), lambda c: calls.append(2)]).schema_version()
    assert calls == [1, 2]


def test_failed_write_rolls_back(store: Store) -> None:
    with pytest.raises(RuntimeError), store.db.write() as conn:
        conn.execute("INSERT INTO tags (name, digest, updated) VALUES ('a:b', ?, 0)", (D1,))
        raise RuntimeError
    assert store.index.get_tag("a:b") is None


def test_leases(store: Store) -> None:
    with store.lease(ttl=60) as lease:
        lease.add(D1, D2)
        rows = store.db.conn.execute(
            "SELECT subject FROM lease_refs WHERE lease_id = ?", (lease.id,)
        ).fetchall()
        assert {r[0] for r in rows} == {D1, D2}
    assert store.db.conn.execute("SELECT count(*) FROM lease_refs").fetchone()[0] == 0
