"""Read any layer blob (zstd, gzip or plain tar) as a stream of tar members, hashing the tar as it goes.

Decompression and sha256 each run on their own thread (both release the GIL), feeding the caller's
thread through bounded queues, so extracting files overlaps with decompressing and hashing them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import lzma
import os
import queue
import threading
import urllib.parse
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, BinaryIO, cast

import zstandard
from isal import igzip, isal_zlib

from layerbuild.errors import UnsafeArchiveError
from layerbuild.layer.compression import sniff_compression
from layerbuild.layer.tarformat import (
    BLOCK,
    MAX_META_SIZE,
    Header,
    Kind,
    RawType,
    decode_header,
    padding,
    parse_pax,
)
from layerbuild.layer.zstdframes import FrameWalker

_CHUNK = 1 << 20
_QUEUE_CHUNKS = 8
_EOF = b""
_KINDS = {k.value: k for k in Kind} | {b"\0": Kind.FILE, b"7": Kind.FILE}


class _Prefixed(io.RawIOBase):
    """`fileobj` with the bytes already peeked from it put back in front."""

    def __init__(self, head: bytes, fileobj: BinaryIO, walker: FrameWalker | None = None) -> None:
        self._head = head
        self._fileobj = fileobj
        self._walker = walker

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            into = getattr(self._fileobj, "readinto", None)
            if into is not None:  # straight into the decompressor's buffer: no copy on the way
                n = into(view)
            else:
                data = self._fileobj.read(len(view))
                n = len(data)
                view[:n] = data
        if self._walker is not None and n:
            self._walker.feed(view[:n])
        return n


class _ReadAhead(io.RawIOBase):
    """`fileobj` read on a thread of its own, up to `_QUEUE_CHUNKS` chunks ahead of its reader: the
    source's own work on the way (a socket's receive, a blob writer's hash and write) overlaps the
    decompression instead of coming between its reads. `close()` stops the thread; what it read and
    nobody took is dropped (a counting source has counted it), and `fileobj` may be read on from there."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._left = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._fetch, args=(fileobj,), name="layer-fetch", daemon=True)
        self._thread.start()

    def _fetch(self, fileobj: BinaryIO) -> None:
        try:
            while not self._stop.is_set():
                data = fileobj.read(_CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # handed to the reader, which raises it where it reads
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._left:
            if self._ended:
                return 0
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
                return 0
            self._left = memoryview(item)
        n = min(len(view), len(self._left))
        view[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)  # unblock a put on a full queue
            except queue.Empty:
                pass
        self._thread.join()
        super().close()


def _head(blob: BinaryIO, n: int) -> bytes:
    """The first `n` bytes of `blob` (fewer only at its end), whatever its reads return."""
    parts: list[bytes] = []
    have = 0
    while have < n:
        part = blob.read(n - have)
        if not part:
            break
        parts.append(part)
        have += len(part)
    return b"".join(parts)


def _decompressed(blob: BinaryIO) -> tuple[Any, str, FrameWalker | None]:
    """A reader of the uncompressed tar in `blob` chosen by its magic bytes, the format's name, and for
    zstd the walker that will tell whether the stream was complete."""
    head = _head(blob, 4)
    fmt = sniff_compression(head)
    if fmt == "zstd":
        walker = FrameWalker()
        dctx = zstandard.ZstdDecompressor()
        source = cast(BinaryIO, _Prefixed(head, blob, walker))
        reader = dctx.stream_reader(source, read_size=_CHUNK, read_across_frames=True)
        return reader, "zstd", walker
    if fmt == "gzip":
        # ISA-L's inflate (CRC and length trailer checked as gzip's are) is several times zlib's speed;
        # it reads with readinto into its own buffer, which the bytes reach with a single copy.
        return igzip.GzipFile(fileobj=_Prefixed(head, blob), mode="rb"), "gzip", None  # type: ignore[no-untyped-call]
    return io.BufferedReader(_Prefixed(head, blob), _CHUNK), "tar", None


class ChunkStream:
    """The uncompressed tar as chunks, with its sha256 computed on the side.

    `finish()` reads to the end (trailing padding counts towards the digest) and returns the digest;
    `close()`, to be called in all cases, stops the threads.
    """

    def __init__(self, blob: BinaryIO, *, max_bytes: int, read_ahead: bool = False) -> None:
        # `read_ahead`: `blob` is read on a thread of its own (see _ReadAhead), for a source that does
        # work of its own as it is read (a download hashed and written to the store on the way).
        self._ahead = _ReadAhead(blob) if read_ahead else None
        self._reader, self.format, self._walker = _decompressed(self._ahead or blob)  # type: ignore[arg-type]
        self._max_bytes = max_bytes
        self._chunks: queue.Queue[bytes | BaseException] = queue.Queue(_QUEUE_CHUNKS)
        self._to_hash: queue.Queue[bytes] = queue.Queue(_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._hash = hashlib.sha256()
        self.size = 0
        self._buf = b""
        self._off = 0
        self._done = False
        self.pos = 0  # bytes handed out so far
        self._producer = threading.Thread(target=self._produce, name="layer-read", daemon=True)
        self._hasher = threading.Thread(target=self._hash_loop, name="layer-hash", daemon=True)
        self._hasher.start()
        self._producer.start()

    def _produce(self) -> None:
        total = 0
        try:
            while not self._stop.is_set():
                chunk = self._reader.read(_CHUNK)
                total += len(chunk)
                if total > self._max_bytes:
                    raise UnsafeArchiveError(
                        f"layer is larger than the {self._max_bytes}-byte limit when unpacked"
                    )
                if not chunk and self._walker is not None and not self._walker.complete():
                    raise UnsafeArchiveError("layer blob is a truncated or corrupt zstd stream")
                self._to_hash.put(chunk)
                self._chunks.put(chunk)
                if not chunk:
                    return
        except BaseException as exc:
            self._to_hash.put(_EOF)
            self._chunks.put(exc)

    def _hash_loop(self) -> None:
        while chunk := self._to_hash.get():
            self._hash.update(chunk)
            self.size += len(chunk)

    def _next_chunk(self) -> bytes:
        if self._done:
            return _EOF
        item = self._chunks.get()
        if isinstance(item, BaseException):
            self._done = True
            if isinstance(item, zstandard.ZstdError | OSError | EOFError | zlib.error | isal_zlib.error | lzma.LZMAError):
                raise UnsafeArchiveError(f"layer blob is not a valid compressed stream: {item}") from item
            raise item
        if not item:
            self._done = True
        return item

    def read_exact(self, n: int, what: str) -> bytes:
        """Exactly `n` bytes, or an error naming `what` if the stream ends first."""
        if self._off + n <= len(self._buf):
            out = self._buf[self._off : self._off + n]
            self._off += n
            self.pos += n
            return out
        parts = [self._buf[self._off :]]
        have = len(parts[0])
        while have < n:
            chunk = self._next_chunk()
            if not chunk:
                raise UnsafeArchiveError(f"layer is truncated inside {what}")
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self._buf, self._off = data, n
        self.pos += n
        return data[:n]

    def read_block_or_eof(self) -> bytes:
        """The next 512-byte block, or b"" at a clean end of stream."""
        if self._off == len(self._buf):
            chunk = self._next_chunk()
            if not chunk:
                return b""
            self._buf, self._off = chunk, 0
        return self.read_exact(BLOCK, "a header")

    def pieces(self, n: int, what: str) -> Iterator[memoryview]:
        """The next `n` bytes as views into the chunks (valid until the next read)."""
        while n:
            if self._off == len(self._buf):
                chunk = self._next_chunk()
                if not chunk:
                    raise UnsafeArchiveError(f"layer is truncated inside {what}")
                self._buf, self._off = chunk, 0
            take = min(n, len(self._buf) - self._off)
            view = memoryview(self._buf)[self._off : self._off + take]
            # Advance before yielding, so a consumer that stops early leaves the position right.
            self._off += take
            self.pos += take
            n -= take
            yield view

    def skip(self, n: int, what: str) -> None:
        for _ in self.pieces(n, what):
            pass

    def finish(self) -> str:
        """Read to the end of the stream (trailing padding counts towards the diff_id) and return it."""
        while self._next_chunk():
            pass
        self._hasher.join()
        return "sha256:" + self._hash.hexdigest()

    def close(self) -> None:
        self._stop.set()
        while not self._done:  # unblock the producer if it waits on a full queue
            try:
                item = self._chunks.get(timeout=0.1)
            except queue.Empty:
                if not self._producer.is_alive():
                    break
                continue
            if not item or isinstance(item, BaseException):
                self._done = True
        self._producer.join()
        self._to_hash.put(_EOF)
        self._hasher.join()
        if self._ahead is not None:
            self._ahead.close()


def _apply_pax(h: Header, records: dict[bytes, bytes]) -> Header:
    changes: dict[str, Any] = {}
    xattrs = dict(h.xattrs)
    for key, value in records.items():
        try:
            if key == b"path":
                changes["path"] = value
            elif key == b"linkpath":
                changes["linkname"] = value
            elif key in (b"size", b"uid", b"gid"):
                changes[key.decode()] = int(value)
            elif key == b"mtime":
                changes["mtime"] = int(float(value))
            elif key.startswith(b"SCHILY.xattr."):
                xattrs[key[len(b"SCHILY.xattr.") :]] = value
            elif key.startswith(b"LIBARCHIVE.xattr."):
                name = urllib.parse.unquote_to_bytes(key[len(b"LIBARCHIVE.xattr.") :])
                xattrs[name] = base64.b64decode(value)
            elif key.startswith(b"GNU.sparse."):
                raise UnsafeArchiveError(f"sparse tar entries are not supported ({h.path!r})")
        except ValueError:
            raise UnsafeArchiveError(f"malformed pax record {key!r} for {h.path!r}") from None
    return replace(h, xattrs=tuple(sorted(xattrs.items())), **changes)


def iter_members(stream: ChunkStream, *, max_entries: int) -> Iterator[Header]:
    """The entries of the tar, pax and GNU extensions applied. Content the caller leaves unread is skipped."""
    global_pax: dict[bytes, bytes] = {}
    local_pax: dict[bytes, bytes] = {}
    count = 0
    while True:
        block = stream.read_block_or_eof()
        if not block or block == b"\0" * BLOCK:
            return  # end-of-archive marker (or a stream that just stops, as some writers do)
        raw = decode_header(block)
        if raw.typeflag in (
            RawType.PAX.value,
            RawType.GLOBAL_PAX.value,
            RawType.GNU_LONGNAME.value,
            RawType.GNU_LONGLINK.value,
        ):
            if raw.size > MAX_META_SIZE:
                raise UnsafeArchiveError(f"extended header of {raw.size} bytes is too large")
            data = stream.read_exact(raw.size + padding(raw.size), "an extended header")[: raw.size]
            if raw.typeflag == RawType.PAX.value:
                local_pax.update(parse_pax(data))
            elif raw.typeflag == RawType.GLOBAL_PAX.value:
                global_pax.update(parse_pax(data))
            elif raw.typeflag == RawType.GNU_LONGNAME.value:
                local_pax[b"path"] = data.split(b"\0", 1)[0]
            else:
                local_pax[b"linkpath"] = data.split(b"\0", 1)[0]
            continue
        count += 1
        if count > max_entries:
            raise UnsafeArchiveError(f"layer has more than {max_entries} entries")
        kind = _KINDS.get(raw.typeflag)
        if kind is None:
            raise UnsafeArchiveError(f"entry {raw.name!r} has an unsupported tar type {raw.typeflag!r}")
        h = Header(
            path=raw.name,
            kind=kind,
            mode=raw.mode & 0o7777,
            uid=raw.uid,
            gid=raw.gid,
            size=raw.size,
            mtime=raw.mtime,
            linkname=raw.linkname,
            devmajor=raw.devmajor,
            devminor=raw.devminor,
        )
        if global_pax or local_pax:
            h = _apply_pax(h, global_pax | local_pax)
            local_pax = {}
        if h.size < 0:
            raise UnsafeArchiveError(f"entry {h.path!r} has a negative size")
        content = (
            h.size if h.kind is Kind.FILE else 0
        )  # header-only types carry none, whatever the field says
        if raw.typeflag == b"\0" and h.path.endswith(b"/"):
            h = replace(h, kind=Kind.DIR)  # old V7 archives mark directories by the slash alone
        if h.kind is not Kind.FILE:
            h = replace(h, size=0)
        end = stream.pos + content
        yield h
        # Whatever the consumer left unread of the content is skipped, then the block padding.
        stream.skip(end - stream.pos + padding(content), f"the content of {os.fsdecode(h.path)!r}")
