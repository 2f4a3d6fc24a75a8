"""ADD's remote and archive sources: http(s) downloads with --checksum, and local tar archives to unpack."""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, cast

from layerbuild.errors import BuildError

if TYPE_CHECKING:
    from layerbuild.layer import ApplyResult

_BLOCK = 512

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Fetched:
    """A downloaded file: where it is, its sha256 digest, and the server's Last-Modified (epoch seconds)."""

    path: Path
    digest: str
    last_modified: int | None


HttpFetch = Callable[[str, Path], Fetched]


def split_url(url: str) -> urllib.parse.SplitResult:
    """`url` taken apart, or a BuildError naming what is wrong with it (a bad IPv6 host, port, no host)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
    except ValueError as exc:
        raise BuildError(f"ADD {url}: invalid URL: {exc}", hint="write it as http(s)://HOST[:PORT]/PATH") from None
    if not parts.hostname:
        raise BuildError(f"ADD {url}: invalid URL: it names no host", hint="write it as http(s)://HOST[:PORT]/PATH")
    return parts


def url_filename(url: str) -> str:
    """The file name ADD gives a download: the last component of the URL path, else `__unnamed__`."""
    base = posixpath.basename(split_url(url).path.rstrip("/") or "/")
    return base if base not in ("", ".", "/", "..") else "__unnamed__"


def is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def is_git_url(src: str) -> bool:
    return src.startswith("git@") or (is_url(src) and split_url(src).path.endswith(".git"))


def http_fetch(url: str, directory: Path) -> Fetched:
    """Download `url` into a new file in `directory` with urllib, hashing it on the way."""
    import email.utils
    import urllib.error
    import urllib.request

    fd, name = tempfile.mkstemp(prefix="add-", dir=directory)
    path = Path(name)
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "layerbuild"})
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp, os.fdopen(fd, "wb") as out:
            modified = resp.headers.get("Last-Modified")
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        path.unlink(missing_ok=True)
        raise BuildError(f"ADD {url}: download failed: {exc}") from exc
    last_modified = None
    if modified:
        try:
            last_modified = int(email.utils.parsedate_to_datetime(modified).timestamp())
        except (TypeError, ValueError):
            last_modified = None
    return Fetched(path, "sha256:" + digest.hexdigest(), last_modified)


def check_checksum(url: str, expected: str, got: str) -> None:
    if expected != got:
        raise BuildError(
            f"ADD {url}: checksum mismatch: expected {expected}, got {got}",
            hint="the file at the URL changed, or --checksum is wrong",
        )


def parse_checksum(value: str) -> str:
    algo, _, hexpart = value.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise BuildError(f"invalid --checksum {value!r}", hint="use sha256:<64 lowercase hex digits>")
    return value


# --- local archives ---------------------------------------------------------------------------------

def _open_decompressed(path: str, fmt: str) -> IO[bytes]:
    import bz2
    import gzip
    import lzma

    import zstandard

    if fmt == "gzip":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if fmt == "bzip2":
        return cast(IO[bytes], bz2.open(path, "rb"))
    if fmt == "xz":
        return cast(IO[bytes], lzma.open(path, "rb"))
    if fmt == "zstd":
        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader
        reader: Any = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        return cast(IO[bytes], reader)
    return open(path, "rb")


def archive_format(path: str) -> str | None:
    """'tar', 'gzip', 'bzip2', 'xz' or 'zstd' when `path` is a (compressed) tar archive, else None.

    Like Docker, a compressed file that does not hold a tar is not an archive: it is copied as is."""
    import lzma

    import zstandard

    from layerbuild.layer.compression import SNIFF_BYTES, sniff_compression
    from layerbuild.layer.tarformat import decode_header

    try:
        with open(path, "rb") as f:
            fmt = sniff_compression(f.read(SNIFF_BYTES))
        with _open_decompressed(path, fmt) as stream:
            block = stream.read(_BLOCK)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError):
        return None
    if len(block) < _BLOCK or block == b"\0" * _BLOCK:
        return None
    try:
        decode_header(block)
    except Exception:
        return None
    return fmt


def unpack_archive(path: str, fmt: str, dest: Path, *, what: str | None = None, devices: bool = True,
                   whiteouts: Literal["apply", "keep"] = "apply") -> ApplyResult:
    """Extract the archive into the empty directory `dest` with the layer extractor's safety rules:
    nothing lands outside `dest`, `..` and links leading out are refused (UnsafeArchiveError), as
    are device nodes with `devices=False`; errors name the archive as `what` (default: its file name);
    `whiteouts="keep"` writes `.wh.` entries as plain files (see layer.apply).
    Rootless, the entries' owners are recorded in an xattr instead of set (see `StageTree.owner`)."""
    from layerbuild.layer import apply_layer
    from layerbuild.layer.admit import check_layer

    # Checked at the door like any archive from outside (see layer.admit), then applied: a hostile
    # entry is refused, named, before anything is written.
    free = os.statvfs(dest).f_bavail * os.statvfs(dest).f_frsize
    with _open_decompressed(path, fmt) as stream:
        check_layer(cast(BinaryIO, stream), what or f"archive {os.path.basename(path)!r}", max_bytes=free,
                    devices=devices)
    with _open_decompressed(path, fmt) as stream:
        return apply_layer(cast(BinaryIO, stream), dest, record_owners=os.geteuid() != 0, whiteouts=whiteouts)
