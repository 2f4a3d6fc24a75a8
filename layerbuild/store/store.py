"""The Store: one root's blobs, index and snapshots behind one object, plus leases and maintenance."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from layerbuild.errors import StoreError
from layerbuild.store.blobs import CorruptBlobError, FileBlobStore, corrupt_blob, read_to_end
from layerbuild.store.db import Database
from layerbuild.store.index import Index
from layerbuild.store.layout import Layout, keep_reserve, resolve_root
from layerbuild.store.snapshots import Snapshots, Unpack

if TYPE_CHECKING:
    from layerbuild.store.fsck import FsckReport
    from layerbuild.store.maintenance import DfReport, PruneReport
    from layerbuild.store.records import CacheRecord, LayerRecord

DEFAULT_LEASE_TTL_S = 6 * 3600.0


class Lease:
    """Protects what it holds (blob digests, diff_ids and what they reference) from prune until released.

    A build takes one before it plans and adds every base, cache hit and blob it puts the moment it
    decides to use it, so a concurrent `prune` cannot delete them before the build's cache records
    and tags point at them. A lease ends when prune finds its owner process gone (the id names it),
    else after its ttl.
    """

    def __init__(self, index: Index, ttl: float) -> None:
        self._index = index
        self._ttl = ttl
        self.id = index.create_lease(ttl)

    def add(self, *subjects: str) -> None:
        self._index.add_to_lease(self.id, subjects)

    def hold_cache(self, key: str) -> CacheRecord | None:
        """The cache record `key` with its result held by this lease (see Index.hold_cache)."""
        return self._index.hold_cache(key, self.id)

    def renew(self) -> None:
        self._index.renew_lease(self.id, self._ttl)

    def release(self) -> None:
        self._index.release_lease(self.id)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Store:
    """Everything kept under one root. Cheap to open; safe to use from several processes at once."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.layout = Layout(self.root)
        try:
            self.layout.create()
        except OSError as exc:  # a file where the root or one of its directories should be, or no access
            raise StoreError(f"cannot use {self.root} as the store root: {exc.strerror or exc}",
                             hint="--root (or $LAYERBUILD_ROOT) must name a directory, or a path where one "
                                  "can be made") from None
        keep_reserve(self.layout)
        self.blobs = FileBlobStore(self.layout)
        self.db = Database(self.layout.index_db)
        self.db.schema_version()  # open now, so a damaged or too-new index fails here, not mid-build
        self.index = Index(self.db)
        self.snapshots = Snapshots(self.layout)

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating if needed) the store at `root` as `resolve_root` finds it."""
        return cls(resolve_root(root))

    def present_layers(self, diff_id: str) -> list[LayerRecord]:
        """The records of the layer `diff_id` (one per compression) whose blob the store holds."""
        return [r for r in self.index.layers_by_diff_id(diff_id) if self.blobs.stat(r.digest) is not None]

    def open_blob(self, digest: str, verify: bool = True) -> BinaryIO:
        """A reader of the blob `digest` (see BlobStore.open), recording the use for LRU pruning."""
        reader = self.blobs.open(digest, verify=verify)
        self._note_use(digest)
        return reader

    @contextlib.contextmanager
    def reading_blob(self, digest: str) -> Iterator[BinaryIO]:
        """A verifying reader of the blob `digest` for a consumer that reads all of it (an export,
        an unpack). When the block ends, the rest is read so the digest is checked even if the
        consumer stopped early. When the consumer fails, the rest is read too: a blob that does not
        match its digest is reported as CorruptBlobError in place of the consumer's error, and a
        decoding error (zstd, gzip, tar) of a blob that does match is reported as corrupt as well."""
        reader = self.open_blob(digest)
        try:
            try:
                yield reader
            except CorruptBlobError:
                raise
            except Exception as exc:
                with contextlib.suppress(OSError, ValueError):  # ValueError: the consumer closed it
                    read_to_end(reader)  # raises CorruptBlobError on a digest mismatch
                if _is_decoding_error(exc):
                    raise corrupt_blob(digest, f"it cannot be decoded ({exc})") from exc
                raise
            read_to_end(reader)
        finally:
            reader.close()

    def ensure_snapshot(self, diff_id: str, unpack: Unpack) -> Path:
        """The unpacked layer `diff_id`, made with `unpack(dir)` if missing (see Snapshots.ensure)."""
        path = self.snapshots.ensure(diff_id, unpack)
        self._note_use(diff_id)
        return path

    def _note_use(self, subject: str) -> None:
        # Bookkeeping for LRU pruning must never fail a read: a busy index just skips this touch.
        with contextlib.suppress(StoreError):
            self.index.touch(subject)

    def lease(self, ttl: float = DEFAULT_LEASE_TTL_S) -> Lease:
        return Lease(self.index, ttl)

    def df(self) -> DfReport:
        from layerbuild.store.maintenance import df

        return df(self)

    def prune(
        self, *, all: bool = False, keep_storage: int | None = None, grace: float | None = None
    ) -> PruneReport:
        from layerbuild.store.maintenance import prune

        return prune(self, all=all, keep_storage=keep_storage, grace=grace)

    def fsck(self, *, repair: bool = True) -> FsckReport:
        from layerbuild.store.fsck import fsck

        return fsck(self, repair=repair)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _is_decoding_error(exc: BaseException) -> bool:
    """Whether `exc` is what a decompressor or tar reader raises on damaged input."""
    import gzip
    import tarfile
    import zlib

    if isinstance(exc, EOFError | zlib.error | gzip.BadGzipFile | tarfile.TarError):
        return True
    zstandard = sys.modules.get("zstandard")  # imported already if a zstd stream was being read
    return zstandard is not None and isinstance(exc, zstandard.ZstdError)
