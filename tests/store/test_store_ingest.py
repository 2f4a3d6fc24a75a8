"""Ingesting tar streams as zstd layers, and `import` of a rootfs tarball as a tagged image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest
import zstandard

from layerbuild.errors import StoreError, UsageError
from layerbuild.store import MEDIA_LAYER_ZSTD, Store, import_rootfs, ingest_layer, normalize_tag


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("etc/os-release", b"ID=toy\n"), ("bin/sh", b"\x7fELF" + bytes(5000))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR = _rootfs_tar()
DIFF_ID = "sha256:" + hashlib.sha256(TAR).hexdigest()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda b: b,
        lambda b: gzip.compress(b, mtime=0),
        lambda b: zstandard.ZstdCompressor().compress(b),
    ],
    ids=["plain", "gzip", "zstd"],
)
def test_ingest_any_compression_gives_the_same_layer(store: Store, wrap) -> None:  # type: ignore[no-untyped-def]
    layer = ingest_layer(store, io.BytesIO(wrap(TAR)))
    assert layer.diff_id == DIFF_ID
    assert layer.diff_size == len(TAR)
    assert layer.media_type == MEDIA_LAYER_ZSTD
    stored = store.blobs.read(layer.digest)
    assert len(stored) == layer.size
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read() == TAR
    assert store.index.layers_by_diff_id(DIFF_ID) == (layer,)


def test_truncated_gzip_is_refused_and_leaves_nothing(store: Store) -> None:
    data = gzip.compress(TAR)[:-20]
    with pytest.raises(StoreError):
        ingest_layer(store, io.BytesIO(data))
    assert list(store.blobs.list()) == []


def test_import_rootfs_makes_a_tagged_image(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    result = import_rootfs(store, io.BytesIO(TAR), "toy", architecture="amd64")
    assert result.tag == "toy:latest"
    assert store.index.get_tag("toy:latest") is not None
    manifest = json.loads(store.blobs.read(result.manifest))
    assert manifest["config"]["digest"] == result.config
    assert manifest["layers"][0]["digest"] == result.layer.digest
    config = json.loads(store.blobs.read(result.config))
    assert config["rootfs"]["diff_ids"] == [DIFF_ID]
    assert config["created"] == "1970-01-01T00:00:00Z"
    # Same input, same epoch: the same image, byte for byte.
    assert import_rootfs(store, io.BytesIO(TAR), "toy:2", architecture="amd64").manifest == result.manifest
    assert store.prune(all=True, grace=0).blobs == ()
    assert store.fsck().ok


@pytest.mark.parametrize(
    ("ref", "tag"),
    [
        ("app", "app:latest"),
        ("app:1", "app:1"),
        ("host:5000/app", "host:5000/app:latest"),
        ("a/b:c", "a/b:c"),
    ],
)
def test_normalize_tag(ref: str, tag: str) -> None:
    assert normalize_tag(ref) == tag


@pytest.mark.parametrize("ref", ["", "has space", "app@sha256:00"])
def test_bad_tag(ref: str) -> None:
    with pytest.raises(UsageError):
        normalize_tag(ref)
