"""Content-addressed blobs under `blobs/sha256/<hex>`: the BlobStore contract and its file implementation."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from layerbuild.digest import is_sha256_digest
from layerbuild.errors import DigestMismatchError, StoreError
from layerbuild.store import chunks
from layerbuild.store.layout import Layout, create_locked_temp, flocked, fsync_dir, start_writeback

_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class BlobNotFoundError(StoreError):
    """The store holds no blob under the digest asked for."""


class CorruptBlobError(DigestMismatchError):
    """A stored blob does not hold what its digest says (damaged on disk): fsck quarantines it."""


def corrupt_blob(digest: str, detail: str) -> CorruptBlobError:
    return CorruptBlobError(
        f"blob {digest} in the store is corrupt: {detail}",
        hint="run `layerbuild fsck` to quarantine it, then pull or build the image again",
    )


def read_to_end(reader: BinaryIO) -> None:
    """Read what is left of a verifying reader, so that its digest is checked even when the consumer
    stopped early (a tar's end-of-archive blocks, a copy of a known size); raises CorruptBlobError."""
    while reader.read(_CHUNK):
        pass


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: its digest, its size in bytes and when it was last put (file mtime, seconds)."""

    digest: str
    size: int
    mtime: float = 0.0


class BlobWriter(Protocol):
    """A blob being written; hashes as it goes. Obtained from `BlobStore.writer()`."""

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def digest(self) -> str:
        """The digest of the bytes written so far."""
        ...

    @property
    def info(self) -> BlobInfo:
        """The committed blob; only valid after the `with` block ended without an error."""
        ...


class BlobStore(Protocol):
    """The content store. Its contract, which every implementation meets:

    - `put(data, expected)` stores `data` under sha256(data) and returns its BlobInfo. Idempotent:
      putting bytes that are already stored does not rewrite them (it only marks them recently put).
      If `expected` is given and differs, raises DigestMismatchError and stores nothing.
    - `writer(expected)` is the streaming put: a context manager yielding a BlobWriter; the blob is
      committed when the block exits normally, under the digest computed while writing, and discarded
      (no trace left under any final name) when it raises or when `expected` does not match.
    - Atomic: a blob appears under its final name complete and durable (fsynced, renamed, directory
      fsynced) or not at all, whatever instant the writer crashes.
    - `open(digest, verify=True)` returns a reader the caller closes; with `verify`, reading to EOF
      raises DigestMismatchError if the content does not hash to `digest`. Missing: BlobNotFoundError.
    - `stat(digest)` returns BlobInfo or None; `delete(digest)` returns whether a blob was removed and
      is idempotent; `list()` yields every stored digest, in no particular order.
    """

    def put(self, data: bytes, expected: str | None = None) -> BlobInfo: ...

    def writer(self, expected: str | None = None) -> contextlib.AbstractContextManager[BlobWriter]: ...

    def open(self, digest: str, verify: bool = True) -> BinaryIO: ...

    def stat(self, digest: str) -> BlobInfo | None: ...

    def delete(self, digest: str) -> bool: ...

    def list(self) -> Iterator[str]: ...


class _VerifyingReader(io.RawIOBase):
    """Passes bytes through, hashing them; at EOF raises DigestMismatchError if they do not match."""

    def __init__(self, raw: BinaryIO, digest: str) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._hash.update(memoryview(buffer)[:n])
        elif not self._checked:
            self._checked = True
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise corrupt_blob(self._digest, f"its content hashes to {actual}")
        return int(n or 0)

    def close(self) -> None:
        self._raw.close()
        super().close()


_WRITEBACK_BYTES = 8 << 20  # how much a writer lets pile up before it starts those bytes' write-out


class _FileBlobWriter:
    """Writes to a locked temp file under `tmp/`, then commits by rename."""

    def __init__(self, store: FileBlobStore, expected: str | None) -> None:
        self._store = store
        self._expected = expected
        self._hash = hashlib.sha256()
        self._size = 0
        self._flushed = 0  # bytes whose write-out to disk has been started
        self._fd, self._tmp = create_locked_temp(store.layout.tmp, "blob-")
        self._info: BlobInfo | None = None
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise StoreError("write to a blob writer that has already finished")
        view = memoryview(data)
        self._hash.update(view)
        written = 0
        while written < len(view):
            written += os.write(self._fd, view[written:])
        self._size += len(view)
        if self._size - self._flushed >= _WRITEBACK_BYTES:  # a large blob: its disk writes start now
            start_writeback(self._fd, self._flushed, self._size - self._flushed)
            self._flushed = self._size
        return len(view)

    @property
    def size(self) -> int:
        return self._size

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    @property
    def info(self) -> BlobInfo:
        if self._info is None:
            raise StoreError("blob writer has not committed")
        return self._info

    def commit(self) -> BlobInfo:
        digest = "sha256:" + self._hash.hexdigest()
        if self._expected is not None and digest != self._expected:
            self.abort()
            raise DigestMismatchError(f"content hashes to {digest}, expected {self._expected}")
        os.fsync(self._fd)
        os.fchmod(self._fd, 0o444)
        self._info = self._store._commit_temp(self._tmp, digest, self._size)
        self._closed = True
        os.close(self._fd)  # releases the temp file's lock; its name is already gone
        return self._info

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)
        with contextlib.suppress(OSError):
            os.close(self._fd)


class _WriterContext:
    def __init__(self, store: FileBlobStore, expected: str | None) -> None:
        self._store = store
        self._expected = expected
        self._writer: _FileBlobWriter | None = None

    def __enter__(self) -> _FileBlobWriter:
        self._writer = _FileBlobWriter(self._store, self._expected)
        return self._writer

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._writer is not None
        if exc_type is not None:
            self._writer.abort()
            return
        try:
            self._writer.commit()
        except BaseException:
            self._writer.abort()  # idempotent: the temp file may already be renamed or gone
            raise


class FileBlobStore:
    """The BlobStore on a local filesystem, rooted at a Layout."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, digest: str) -> Path:
        """Where the blob `digest` lives (whether or not it exists); for callers that need a file."""
        return self.layout.blob_path(_checked(digest))

    def put(self, data: bytes, expected: str | None = None) -> BlobInfo:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and digest != _checked(expected):
            raise DigestMismatchError(f"content hashes to {digest}, expected {expected}")
        existing = self._touch_existing(digest)
        if existing is not None:
            return existing
        with self.writer(digest) as w:
            w.write(data)
        return w.info

    def put_stream(self, src: BinaryIO, expected: str | None = None) -> BlobInfo:
        with self.writer(expected) as w:
            while chunk := src.read(_CHUNK):
                w.write(chunk)
        return w.info

    def writer(self, expected: str | None = None) -> contextlib.AbstractContextManager[_FileBlobWriter]:
        return _WriterContext(self, _checked(expected) if expected is not None else None)

    def open(self, digest: str, verify: bool = True) -> BinaryIO:
        path = self.path(digest)
        try:
            raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - the caller closes the reader
        except FileNotFoundError:
            recipe = chunks.read_recipe(self.layout, digest)
            if recipe is None:
                raise BlobNotFoundError(f"blob {digest} is not in the store") from None
            raw = chunks.open_recipe(self.layout, recipe)
        if not verify:
            return raw
        return io.BufferedReader(_VerifyingReader(raw, digest), buffer_size=_CHUNK)

    def read(self, digest: str) -> bytes:
        """The whole verified content of a (small) blob."""
        with self.open(digest, verify=True) as f:
            return f.read()

    def stat(self, digest: str) -> BlobInfo | None:
        try:
            st = os.stat(self.path(digest))
        except FileNotFoundError:
            return self._stat_recipe(digest)
        return BlobInfo(digest, st.st_size, st.st_mtime)

    def _stat_recipe(self, digest: str) -> BlobInfo | None:
        try:
            st = os.stat(chunks.recipe_path(self.layout, _checked(digest)))
            recipe = chunks.read_recipe(self.layout, digest)
        except (FileNotFoundError, chunks.RecipeError):
            return None
        return None if recipe is None else BlobInfo(digest, recipe.size, st.st_mtime)

    def stored_size(self, digest: str) -> tuple[int, float] | None:
        """The bytes `digest` takes on disk itself (its file and its recipe, not the frames a recipe
        names in other blobs) and when it was last put; None if it is not stored."""
        found: tuple[int, float] | None = None
        for path in (self.path(digest), chunks.recipe_path(self.layout, digest)):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            found = (st.st_size + (found[0] if found else 0), max(st.st_mtime, found[1] if found else 0.0))
        return found

    def recipe(self, digest: str) -> chunks.Recipe | None:
        """The recipe (frame list) of the layer blob `digest`, if it has one and it can be read."""
        try:
            return chunks.read_recipe(self.layout, _checked(digest))
        except chunks.RecipeError:
            return None

    def put_recipe(self, recipe: chunks.Recipe) -> BlobInfo:
        """Store the blob `recipe.digest` as its frames (see chunks.write_recipe); idempotent."""
        if not chunks.has_recipe(self.layout, recipe.digest):
            chunks.write_recipe(self.layout, recipe)
        info = self.stat(recipe.digest)
        if info is None:
            raise StoreError(f"blob {recipe.digest} vanished as it was stored")
        return info

    def delete(self, digest: str) -> bool:
        path = self.path(digest)
        # The exclusive gc lock keeps a delete from landing between a put's "already there" check
        # and the caller relying on that blob.
        with flocked(self.layout.gc_lock):
            removed = self.delete_locked(digest)
        if removed:
            fsync_dir(path.parent)
            fsync_dir(self.layout.recipes)
        return removed

    def delete_locked(self, digest: str) -> bool:
        """`delete` for a caller that holds the gc lock: the blob file and its recipe, if any (the
        caller fsyncs both directories)."""
        removed = False
        for path in (self.path(digest), chunks.recipe_path(self.layout, digest)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed = True
        return removed

    def list(self) -> Iterator[str]:
        try:
            entries = list(os.scandir(self.layout.blobs))
        except FileNotFoundError:
            return
        seen: set[str] = set()
        for entry in entries:
            if _HEX_RE.match(entry.name):
                seen.add(entry.name)
                yield "sha256:" + entry.name
        for digest in chunks.recipe_digests(self.layout):
            if digest[7:] not in seen:
                yield digest

    def _touch_existing(self, digest: str) -> BlobInfo | None:
        path = self.path(digest)
        with flocked(self.layout.gc_lock, shared=True):
            return _touch(path, digest)

    def _commit_temp(self, tmp: Path, digest: str, size: int) -> BlobInfo:
        final = self.path(digest)
        with flocked(self.layout.gc_lock, shared=True):
            existing = _touch(final, digest)
            if existing is not None:
                # Idempotent put: the stored copy stays, ours goes.
                os.unlink(tmp)
                return existing
            os.rename(tmp, final)
            mtime = os.stat(final).st_mtime  # under the lock: a prune may take the blob once it is released
        fsync_dir(final.parent)
        return BlobInfo(digest, size, mtime)


def _touch(path: Path, digest: str) -> BlobInfo | None:
    """Mark an existing blob as just put (prune's grace period counts from here); None if absent."""
    try:
        os.utime(path)
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return BlobInfo(digest, st.st_size, st.st_mtime)


def _checked(digest: str) -> str:
    if not is_sha256_digest(digest):
        raise StoreError(f"not a sha256 digest: {digest!r}")
    return digest
