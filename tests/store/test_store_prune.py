"""prune and df: never remove what a tag reaches; drop the rest least recently used first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_toys import put_image, put_layer

from layerbuild.store import Store


def _present(store: Store, digest: str) -> bool:
    return store.blobs.stat(digest) is not None


def _unpack(dest: Path) -> None:
    (dest / "file").write_bytes(b"x" * 100)


def test_tagged_image_survives_everything(store: Store) -> None:
    img = put_image(store, [b"base", b"app"], tag="app:1")
    store.index.put_cache("k1", "layer", img.layers[1])
    for diff in img.layers:
        store.ensure_snapshot(diff, _unpack)
    report = store.prune(all=True, keep_storage=0, grace=0)
    assert report.cache_records == 1  # --all drops even records whose result is tagged...
    for d in (img.manifest, img.config, *img.layers):  # ...but never the tagged content
        assert _present(store, d)
    assert set(store.snapshots.diff_ids()) == set(img.layers)
    assert store.fsck().ok


def test_untagged_content_and_its_records_go(store: Store) -> None:
    kept = put_image(store, [b"base"], tag="app:1")
    gone = put_image(store, [b"base", b"old"], salt="old")
    store.index.put_cache("old-step", "layer", gone.layers[1])
    store.index.put_cache("base-step", "layer", kept.layers[0])
    store.ensure_snapshot(gone.layers[1], _unpack)
    orphan = store.blobs.put(b"stray blob from a crashed build").digest
    report = store.prune(grace=0)
    assert set(report.blobs) == {gone.manifest, gone.config, gone.layers[1], orphan}
    assert report.cache_records == 1
    assert report.snapshots == (gone.layers[1],)
    assert store.index.get_cache("base-step") is not None  # its result is tagged: kept without --all
    assert store.index.get_cache("old-step") is None
    assert store.index.get_image(gone.manifest) is None
    assert store.index.get_layer(gone.layers[1]) is None
    assert _present(store, kept.layers[0]) and _present(store, kept.manifest)
    assert report.reclaimed > 0
    assert store.fsck().ok


def test_grace_period_protects_fresh_blobs(store: Store) -> None:
    orphan = store.blobs.put(b"just put, not referenced yet").digest
    assert store.prune().blobs == ()  # default grace
    assert _present(store, orphan)
    assert store.prune(grace=0).blobs == (orphan,)


def test_fresh_manifest_protects_what_it_references(store: Store) -> None:
    img = put_image(store, [b"l1"])
    path = store.blobs.path(img.layers[0])
    os.utime(path, (1, 1))
    os.utime(store.blobs.path(img.config), (1, 1))
    store.prune(grace=3600)  # the manifest is fresh: it and all it references stay
    assert _present(store, img.layers[0]) and _present(store, img.config)


def test_lease_protects_content(store: Store) -> None:
    img = put_image(store, [b"leased layer"])
    with store.lease() as lease:
        lease.add(img.manifest)
        assert store.prune(grace=0).blobs == ()
    assert set(store.prune(grace=0).blobs) == {img.manifest, img.config, *img.layers}


def test_keep_storage_drops_least_recently_used_first(store: Store) -> None:
    old = put_layer(store, b"o" * 10_000)
    new = put_layer(store, b"n" * 10_000)
    store.index.put_cache("old", "layer", old)
    store.index.put_cache("new", "layer", new)
    store.db.conn.execute("UPDATE cache SET last_used = 100 WHERE key = 'old'")
    store.db.conn.execute("UPDATE cache SET last_used = 200 WHERE key = 'new'")
    report = store.prune(keep_storage=15_000, grace=0)
    assert report.blobs == (old,)
    assert report.remaining == 10_000
    assert store.index.get_cache("new") is not None
    assert store.prune(keep_storage=15_000, grace=0).blobs == ()  # already under the limit


def test_prune_removes_orphan_temp_files(store: Store) -> None:
    (store.layout.tmp / "blob-999-dead.tmp").write_bytes(b"half a blob")
    assert store.prune().temp_files == 1
    assert os.listdir(store.layout.tmp) == []


def test_df_reports_kinds_and_reclaimable(store: Store) -> None:
    img = put_image(store, [b"a" * 1000], tag="x:1")
    junk = put_layer(store, b"j" * 5000)
    store.index.put_cache("k", "layer", junk)
    store.ensure_snapshot(img.layers[0], _unpack)
    report = store.df()
    by_kind = {e.kind: e for e in report.entries}
    assert by_kind["layers"].count == 2 and by_kind["layers"].size == 6000
    assert by_kind["configs"].count == 1 and by_kind["manifests"].count == 1
    assert by_kind["snapshots"].size == 100
    assert by_kind["cache records"].count == 1
    assert by_kind["index"].size > 0
    assert by_kind["layers"].reclaimable == 0  # inside the grace period
    store.db.conn.execute("UPDATE cache SET last_used = 1")
    os.utime(store.blobs.path(junk), (1, 1))
    assert {e.kind: e for e in store.df().entries}["layers"].reclaimable == 5000
    assert store.prune().reclaimed == 5000


# Random graphs: layers, images over subsets of layers, some tagged; records over layers and configs.
graphs = st.fixed_dictionaries(
    {
        "layers": st.integers(1, 8),
        "images": st.lists(st.tuples(st.lists(st.integers(0, 7), max_size=4), st.booleans()), max_size=5),
        "records": st.lists(st.tuples(st.integers(0, 12), st.integers(0, 1000)), max_size=8),
        "orphans": st.integers(0, 3),
        "all": st.booleans(),
        "keep": st.one_of(st.none(), st.integers(0, 4000)),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs)
def test_prune_never_removes_what_a_tag_reaches(g: dict) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "root") as store:
        layers = [put_layer(store, f"layer {i} ".encode() * (i + 1) * 20) for i in range(g["layers"])]
        images = []
        for n, (picks, tagged) in enumerate(g["images"]):
            chosen = [f"layer {i % g['layers']} ".encode() * ((i % g["layers"]) + 1) * 20 for i in picks]
            images.append(put_image(store, chosen, tag=f"img:{n}" if tagged else None, salt=str(n)))
        targets = layers + [i.config for i in images] + [i.manifest for i in images]
        for n, (pick, used) in enumerate(g["records"]):
            store.index.put_cache(f"key{n}", "step", targets[pick % len(targets)])
            store.db.conn.execute("UPDATE cache SET last_used = ? WHERE key = ?", (used, f"key{n}"))
        for n in range(g["orphans"]):
            store.blobs.put(f"orphan {n}".encode())
        must_stay = set()
        for tag in store.index.list_tags():
            img = next(i for i in images if i.manifest == tag.digest)
            must_stay |= {img.manifest, img.config, *img.layers}

        report = store.prune(all=g["all"], keep_storage=g["keep"], grace=0)

        for digest in must_stay:
            assert _present(store, digest), digest
        assert not must_stay & set(report.blobs)
        for tag in store.index.list_tags():
            assert store.index.get_image(tag.digest) is not None
        if g["keep"] is None:
            # Nothing unreachable survives an unlimited prune.
            survivors = set(store.blobs.list())
            kept_records = {r.result for r in store.index.list_cache()}
            assert survivors <= must_stay | _closure_of(store, kept_records)
        assert store.fsck().ok


def _closure_of(store: Store, roots: set[str]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        d = stack.pop()
        if d in seen:
            continue
        seen.add(d)
        img = store.index.get_image(d)
        if img:
            stack.extend(img.refs)
        stack.extend(rec.digest for rec in store.index.layers_by_diff_id(d))
    return seen


def test_recent_read_protects_from_prune(store: Store) -> None:
    digest = store.blobs.put(b"read by a running export").digest
    os.utime(store.blobs.path(digest), (1, 1))
    with store.open_blob(digest) as f:  # records the use
        f.read()
    assert store.index.last_use(digest) is not None
    assert store.prune(grace=60).blobs == ()
    assert store.prune(grace=0).blobs == (digest,)


def test_the_parse_and_no_op_caches_are_counted_and_cleared_by_prune_all(store: Store) -> None:
    for directory in store.layout.json_caches:
        directory.mkdir()
        (directory / "k.json").write_text('{"x": 1}')
    before = store.df()
    sizes = {e.kind: e.size for e in before.entries}
    assert sizes["parsed dockerfiles"] == 8 and sizes["no-op records"] == 8
    assert before.total >= 16
    assert store.prune(grace=0).cache_files == 0
    report = store.prune(all=True, grace=0)
    assert report.cache_files == 2 and report.reclaimed >= 16
    assert store.df().total == before.total - 16


def test_records_of_steps_without_a_layer_survive_a_plain_prune(store: Store) -> None:
    from layerbuild.store import NO_RESULT

    gone = put_image(store, [b"old"], salt="old")
    store.index.put_cache("workdir-step", "meta", NO_RESULT)
    store.index.put_cache("old-step", "layer", gone.layers[0])
    report = store.prune(grace=0)
    assert report.cache_records == 1 and store.index.get_cache("old-step") is None
    assert store.index.get_cache("workdir-step") is not None  # it holds nothing: a row to keep
    assert store.prune(all=True, grace=0).cache_records == 1
    assert store.index.get_cache("workdir-step") is None
    assert store.fsck().ok
