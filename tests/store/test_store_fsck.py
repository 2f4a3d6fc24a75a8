"""fsck: a clean store passes; corrupt and missing blobs are found, quarantined and unreferenced."""

from __future__ import annotations

import os

import pytest
from store_toys import put_image, put_layer

from layerbuild.digest import sha256_digest
from layerbuild.store import NO_RESULT, Store


def test_clean_store_passes(store: Store) -> None:
    put_image(store, [b"a", b"b"], tag="x:1")
    report = store.fsck()
    assert report.ok
    assert report.blobs_checked == 4


def test_corrupt_blob_is_quarantined_and_unreferenced(store: Store) -> None:
    img = put_image(store, [b"base", b"app"], tag="app:1")
    store.index.put_cache("step", "layer", img.layers[1])
    path = store.blobs.path(img.layers[1])
    path.chmod(0o644)
    path.write_bytes(b"bit rot")

    report = store.fsck()
    assert not report.ok
    kinds = {(p.kind, p.subject) for p in report.problems}
    assert ("corrupt blob", img.layers[1]) in kinds
    assert ("dangling tag", "app:1") in kinds
    assert ("dangling cache record", "step") in kinds
    assert not path.exists()
    assert [n.split(".")[0] for n in os.listdir(store.layout.quarantine)] == [img.layers[1].split(":")[1]]
    assert store.index.get_tag("app:1") is None
    assert store.index.get_cache("step") is None
    assert store.index.get_layer(img.layers[1]) is None
    assert store.index.get_image(img.manifest) is None
    # Repaired: a second run finds nothing, and the layer can simply be stored again.
    assert store.fsck().ok
    assert put_layer(store, b"app") == img.layers[1]


def test_missing_blob_is_reported_and_rows_dropped(store: Store) -> None:
    img = put_image(store, [b"only"], tag="t:1")
    os.unlink(store.blobs.path(img.config))
    report = store.fsck()
    kinds = {(p.kind, p.subject) for p in report.problems}
    assert ("dangling reference", img.config) in kinds  # the config row has no blob
    assert ("dangling reference", img.manifest) in kinds  # the manifest references it
    assert ("dangling tag", "t:1") in kinds
    assert store.fsck().ok


@pytest.mark.store_corrupted  # leaves the damage it reports
def test_dry_run_changes_nothing(store: Store) -> None:
    img = put_image(store, [b"z"], tag="t:1")
    os.unlink(store.blobs.path(img.layers[0]))
    assert not store.fsck(repair=False).ok
    assert store.index.get_tag("t:1") is not None
    assert not store.fsck(repair=False).ok


def test_stray_files_and_orphan_temps(store: Store) -> None:
    (store.layout.blobs / "not-a-digest").write_bytes(b"?")
    (store.layout.tmp / "blob-1-dead.tmp").write_bytes(b"half")
    report = store.fsck()
    assert [p.kind for p in report.problems] == ["stray file"]
    assert len(report.temp_removed) == 1  # a dead writer's temp file is cleaned, not a problem
    assert store.fsck().ok


def test_live_writer_temp_file_is_left_alone(store: Store) -> None:
    with store.blobs.writer() as w:
        w.write(b"in progress")
        report = store.fsck()
        assert report.ok and report.temp_removed == ()
        assert len(os.listdir(store.layout.tmp)) == 1
    assert w.info.digest == sha256_digest(b"in progress")


def test_cache_record_on_missing_layer(store: Store) -> None:
    store.index.put_cache("k", "layer", sha256_digest(b"never stored"))
    report = store.fsck()
    assert [p.kind for p in report.problems] == ["dangling cache record"]
    assert store.index.get_cache("k") is None


def test_a_cache_record_of_a_step_that_made_no_layer_is_valid(store: Store) -> None:
    """A config-only step (or a WORKDIR that existed) is recorded with no result; fsck keeps it."""
    store.index.put_cache("meta-step", "meta", NO_RESULT)
    for repair in (False, True):
        report = store.fsck(repair=repair)
        assert report.ok, report.problems
    assert store.index.get_cache("meta-step") is not None
