"""The BlobStore contract, run against every implementation."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from layerbuild.digest import sha256_digest
from layerbuild.errors import DigestMismatchError, StoreError
from layerbuild.store import BlobNotFoundError, BlobStore, FileBlobStore, Layout, Store

Factory = Callable[[Path], BlobStore]


def _file_store(root: Path) -> BlobStore:
    layout = Layout(root)
    layout.create()
    return FileBlobStore(layout)


@pytest.fixture(params=[_file_store], ids=["file"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    factory: Factory = request.param
    return factory(tmp_path / "root")


def _tmp_entries(tmp_path: Path) -> list[str]:
    return os.listdir(tmp_path / "root" / "tmp")


def test_put_then_get(blobs: BlobStore) -> None:
    info = blobs.put(b"hello")
    assert info.digest == sha256_digest(b"hello")
    assert info.size == 5
    with blobs.open(info.digest) as f:
        assert f.read() == b"hello"
    assert blobs.stat(info.digest) is not None
    assert list(blobs.list()) == [info.digest]


def test_put_is_idempotent_and_does_not_rewrite(blobs: BlobStore, tmp_path: Path) -> None:
    first = blobs.put(b"same")
    path = tmp_path / "root" / "blobs" / "sha256" / first.digest.split(":")[1]
    inode = path.stat().st_ino
    os.utime(path, (1, 1))
    second = blobs.put(b"same")
    assert second.digest == first.digest
    assert path.stat().st_ino == inode  # not rewritten
    assert path.stat().st_mtime > 1  # but marked as recently put, for prune's grace period
    assert list(blobs.list()) == [first.digest]
    assert _tmp_entries(tmp_path) == []


def test_put_with_wrong_expected_digest_stores_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError):
        blobs.put(b"data", expected=sha256_digest(b"other"))
    assert list(blobs.list()) == []
    assert _tmp_entries(tmp_path) == []


def test_streaming_writer_commits_under_computed_digest(blobs: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    with blobs.writer() as w:
        for i in range(0, len(data), 65536):
            w.write(data[i : i + 65536])
        assert w.size == len(data)
    assert w.info.digest == sha256_digest(data)
    with blobs.open(w.info.digest) as f:
        assert f.read() == data
    assert _tmp_entries(tmp_path) == []


def test_streaming_writer_expected_mismatch_leaves_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError), blobs.writer(expected=sha256_digest(b"x")) as w:
        w.write(b"not x")
    assert list(blobs.list()) == []
    assert _tmp_entries(tmp_path) == []


def test_streaming_writer_error_leaves_nothing(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), blobs.writer() as w:
        w.write(b"partial")
        raise RuntimeError("producer failed")
    assert list(blobs.list()) == []
    assert _tmp_entries(tmp_path) == []


def test_streaming_writer_of_existing_blob_is_idempotent(blobs: BlobStore, tmp_path: Path) -> None:
    info = blobs.put(b"abc")
    with blobs.writer(expected=info.digest) as w:
        w.write(b"abc")
    assert w.info.digest == info.digest
    assert list(blobs.list()) == [info.digest]
    assert _tmp_entries(tmp_path) == []


def test_verified_read_fails_on_corruption(blobs: BlobStore, tmp_path: Path) -> None:
    info = blobs.put(b"good content" * 1000)
    path = tmp_path / "root" / "blobs" / "sha256" / info.digest.split(":")[1]
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"X")
    with pytest.raises(DigestMismatchError), blobs.open(info.digest) as reader:
        reader.read()
    with blobs.open(info.digest, verify=False) as reader:  # explicitly unverified reads still work
        assert len(reader.read()) == info.size


def test_verified_read_in_chunks(blobs: BlobStore) -> None:
    data = os.urandom(200_000)
    info = blobs.put(data)
    out = io.BytesIO()
    with blobs.open(info.digest) as f:
        while chunk := f.read(4096):
            out.write(chunk)
    assert out.getvalue() == data


def test_missing_blob(blobs: BlobStore) -> None:
    digest = sha256_digest(b"nope")
    assert blobs.stat(digest) is None
    with pytest.raises(BlobNotFoundError):
        blobs.open(digest)
    assert blobs.delete(digest) is False


def test_delete(blobs: BlobStore) -> None:
    info = blobs.put(b"to delete")
    assert blobs.delete(info.digest) is True
    assert blobs.stat(info.digest) is None
    assert blobs.delete(info.digest) is False


def test_bad_digest_is_rejected(blobs: BlobStore) -> None:
    with pytest.raises(StoreError):
        blobs.open("sha256:../../etc/passwd")
    with pytest.raises(StoreError):
        blobs.put(b"x", expected="md5:abc")


def test_blob_files_are_read_only(blobs: BlobStore, tmp_path: Path) -> None:
    info = blobs.put(b"ro")
    path = tmp_path / "root" / "blobs" / "sha256" / info.digest.split(":")[1]
    assert path.stat().st_mode & 0o222 == 0


def test_a_large_blob_starts_its_write_out_as_it_grows(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every 8 MiB written, the writer asks the kernel to start writing those bytes out (the real
    sync_file_range is called first, then a recorder stands in); the blob is whole either way, and
    where the call is missing the writer goes on without it."""
    from layerbuild.store import layout

    data = os.urandom(1 << 20) * 20
    with store.blobs.writer() as w:  # the real call, on a real file
        for i in range(0, len(data), 1 << 20):
            w.write(data[i : i + (1 << 20)])
    assert layout._sync_file_range not in (None, False)
    assert store.blobs.read(w.info.digest) == data

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(layout, "_sync_file_range", lambda fd, off, n, flags: calls.append((off, n)))
    with store.blobs.writer() as w:
        for i in range(0, len(data) - 1, 3 << 20):
            w.write(data[i : i + (3 << 20)] + b"x")
    assert calls == [(0, 9 * (1 << 20) + 3), (9 * (1 << 20) + 3, 9 * (1 << 20) + 3)]
    monkeypatch.setattr(layout, "_sync_file_range", False)
    with store.blobs.writer() as w:
        w.write(data)
    assert store.blobs.read(w.info.digest) == data
