"""The read-ahead of a layer's blob (layer.reader._ReadAhead, ChunkStream(read_ahead=True)): every byte
once and in order whatever the reads, the source's errors raised where the reader reads, a reader that
stops early stops the thread; and ingest through it (what a pull does) keeps its digests exact, also
when the blob is damaged."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerbuild.errors import DigestMismatchError
from layerbuild.layer.ingest import ingest_layer
from layerbuild.layer.reader import _ReadAhead
from layerbuild.store import Store


class _Source(io.RawIOBase):
    """Bytes handed out in pieces of its own sizes; optionally an error after `fail_after` bytes."""

    def __init__(self, data: bytes, piece: int, fail_after: int | None = None) -> None:
        self._data, self._piece, self._fail_after = data, piece, fail_after
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self.pos >= self._fail_after:
            raise OSError("connection reset by peer")
        take = min(self._piece, n if n >= 0 else self._piece)
        out = self._data[self.pos : self.pos + take]
        self.pos += len(out)
        return out


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=5 << 20).map(lambda b: b * 3), st.integers(1, 3 << 20), st.integers(1, 2 << 20))
def test_every_byte_once_and_in_order(data: bytes, piece: int, want: int) -> None:
    ahead = _ReadAhead(_Source(data, piece))  # type: ignore[arg-type]
    got = bytearray()
    buf = bytearray(want)
    while n := ahead.readinto(buf):
        got += buf[:n]
    assert bytes(got) == data and ahead.readinto(buf) == 0
    ahead.close()


def test_the_sources_error_is_raised_where_the_reader_reads() -> None:
    ahead = _ReadAhead(_Source(b"x" * (3 << 20), 1 << 20, fail_after=2 << 20))  # type: ignore[arg-type]
    buf = bytearray(1 << 20)
    assert ahead.readinto(buf) == 1 << 20 and ahead.readinto(buf) == 1 << 20
    with pytest.raises(OSError, match="reset by peer"):
        ahead.readinto(buf)
    ahead.close()


def test_close_stops_a_thread_that_waits_on_a_full_queue() -> None:
    source = _Source(b"y" * (64 << 20), 1 << 20)
    ahead = _ReadAhead(source)  # type: ignore[arg-type]
    ahead.readinto(bytearray(10))
    done = threading.Event()
    threading.Thread(target=lambda: (ahead.close(), done.set()), daemon=True).start()
    assert done.wait(10)
    assert source.pos < 64 << 20  # it stopped reading: the rest is the caller's to read, or not


def _layer() -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(6):
            data = hashlib.sha256(str(i).encode()).digest() * 40_000
            info = tarfile.TarInfo(f"d/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def test_ingest_through_the_read_ahead_keeps_the_blob_and_its_digests(tmp_path: Path) -> None:
    blob, diff_id = _layer()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with Store(tmp_path / "store") as store:
        record = ingest_layer(store, _Source(blob, 100_000), expected_digest=digest,  # type: ignore[arg-type]
                              expected_size=len(blob), expected_diff_id=diff_id, keep=True)
        assert (record.digest, record.diff_id) == (digest, diff_id)
        assert store.blobs.read(digest) == blob


def test_a_damaged_blob_read_ahead_is_a_digest_mismatch_with_nothing_kept(tmp_path: Path) -> None:
    blob, diff_id = _layer()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0xFF  # inside the deflate stream: the inflater fails midway
    with Store(tmp_path / "store") as store:
        with pytest.raises(DigestMismatchError, match="hashes to"):
            ingest_layer(store, _Source(bytes(damaged), 100_000), expected_digest=digest,  # type: ignore[arg-type]
                         expected_size=len(blob), expected_diff_id=diff_id, keep=True)
        assert list(store.blobs.list()) == [] and store.index.layers_by_diff_id(diff_id) == ()
