"""A Dockerfile or a build context that arrives as a stream (`build -f - DIR`, `build -`), made into the
files a build reads, in a scratch directory of the store that lives as long as the build.

As the docker CLI decides, a stream given as the context is a tar archive of the context when it
looks like one — the magic bytes of gzip, bzip2, xz or zstd, or a valid tar header in its first
block — and a Dockerfile otherwise, with no context at all. The archive is untrusted input: it is
spooled to the scratch directory (no larger than the disk's free space), checked entry by entry at
the door (layer.admit: no absolute names, no `..` above the root, no entry through a symlink of the
archive, hardlinks only to earlier entries, no device nodes, no more content than the free space),
and only then unpacked with the layer extractor. `-f NAME` names the Dockerfile inside it, resolved
inside the unpacked tree (a symlink cannot lead it out). As in BuildKit, which takes an archive
context as it is, no `.dockerignore` inside the archive applies to it.

What the build then sees is a directory like any other: its content keys and cache keys are those of
the same files in a directory context. What differs is named by `StreamOrigin`: the build's history
key (so a rebuild from the same stream explains its misses against the last one), the name messages
give the Dockerfile, and that the context is scratch (its stats are not remembered).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.parser.limits import MAX_FILE_BYTES
from layerbuild.store.layout import make_scratch
from layerbuild.store.snapshots import remove_tree
from layerbuild.worker.request import AMBIGUOUS, BOTH_STDIN, BOTH_STDIN_HINT, StreamOrigin

if TYPE_CHECKING:
    from layerbuild.store import Store

HEAD_BYTES = 1024  # what the docker CLI peeks at to tell an archive from a Dockerfile
_CHUNK = 1 << 20
ARCHIVE = "the context archive on standard input"
NO_CONTEXT = ("the build has no context: its Dockerfile came from standard input (`build -`); give a "
              "context directory to copy files from (`build -f - DIR`), or pipe a tar archive of one")


@dataclass(frozen=True)
class Materialized:
    """What the build reads instead of the streams: a context directory, a Dockerfile path, and where
    they came from."""

    context: Path
    dockerfile: Path
    origin: StreamOrigin


def is_stream(value: object) -> bool:
    """Whether a build argument is a stream to read (a binary file object) rather than a path."""
    return hasattr(value, "read") and not isinstance(value, str | bytes | os.PathLike)


def looks_like_archive(head: bytes) -> str | None:
    """The compression ('tar', 'gzip', 'bzip2', 'xz', 'zstd') when a stream starting with `head` is
    an archive by docker's test, else None (it is a Dockerfile)."""
    from layerbuild.layer.compression import sniff_compression
    from layerbuild.layer.tarformat import BLOCK, decode_header

    fmt = sniff_compression(head)
    if fmt != "tar":
        return fmt
    if len(head) < BLOCK:
        return None
    try:
        decode_header(head[:BLOCK])
    except LayerbuildError:
        return None
    return "tar"


@contextlib.contextmanager
def materialize(
    store: Store,
    *,
    context: Path | BinaryIO,
    dockerfile: Path | str | bytes | BinaryIO | None,
    tags: tuple[str, ...] = (),
) -> Iterator[Materialized]:
    """The context and Dockerfile of a build, one (or both) given as a stream, as files in a scratch
    directory that is removed when the block ends (or, if the process dies, by the next command's
    clean-up). `context` is a directory or a stream (`build -`); `dockerfile` a path (for a stream
    context: the name inside its archive), the Dockerfile's bytes, or a stream (`-f -`). A stream
    context has no path to name the build's history by: the Dockerfile's name and the `tags` do."""
    if is_stream(context) and is_stream(dockerfile):
        raise UsageError(BOTH_STDIN, hint=BOTH_STDIN_HINT)
    scratch = make_scratch(store.layout.tmp, "context-")
    try:
        yield _materialize(scratch, context, dockerfile, "\0".join(sorted(tags)))
    finally:
        remove_tree(scratch)


def _materialize(scratch: Path, context: Path | BinaryIO, dockerfile: Path | str | bytes | BinaryIO | None,
                 tags: str) -> Materialized:
    text = _dockerfile_bytes(dockerfile)
    if not is_stream(context):
        directory = Path(context)  # type: ignore[arg-type]
        if text is None:
            raise UsageError("no stream to read", hint="give the context or the Dockerfile as a stream")
        path = _write(scratch / "Dockerfile", text)
        return Materialized(directory, path, StreamOrigin(f"dockerfile\0{directory.resolve()}", "Dockerfile"))
    stream: BinaryIO = context  # type: ignore[assignment]
    head = _read_upto(stream, HEAD_BYTES, "context")
    fmt = looks_like_archive(head)
    if fmt is None:  # a Dockerfile, and no context
        if not head:
            raise UsageError("standard input is empty", hint="pipe a Dockerfile or a tar archive of the context "
                                                             "into `build -`")
        if dockerfile is not None:
            raise UsageError(AMBIGUOUS, hint="leave out -f: the Dockerfile is what standard input holds")
        empty = scratch / "context"
        empty.mkdir()
        rest = _read_upto(stream, MAX_FILE_BYTES + 1 - len(head), "context")  # past the limit, the parser says so
        path = _write(scratch / "Dockerfile", head + rest)
        return Materialized(empty, path, StreamOrigin(f"dockerfile\0\0{tags}", "Dockerfile", scratch_context=True,
                                                      note=NO_CONTEXT))
    directory = _unpack(scratch, head, stream, fmt)
    if text is not None:
        path = _write(scratch / "Dockerfile", text)
        return Materialized(directory, path, StreamOrigin(f"context\0-\0{tags}", "Dockerfile",
                                                          scratch_context=True))
    name = "Dockerfile" if dockerfile is None else os.fspath(dockerfile)  # type: ignore[arg-type]
    return Materialized(directory, _inside(directory, name), StreamOrigin(f"context\0{name}\0{tags}", name,
                                                                          scratch_context=True))


def _dockerfile_bytes(dockerfile: Path | str | bytes | BinaryIO | None) -> bytes | None:
    """The Dockerfile's text when it is given as bytes or a stream (read up to the parser's limit)."""
    if isinstance(dockerfile, bytes):
        return dockerfile
    if is_stream(dockerfile):
        data = _read_upto(dockerfile, MAX_FILE_BYTES + 1, "Dockerfile")  # type: ignore[arg-type]
        if not data:
            raise UsageError("the Dockerfile on standard input is empty", hint="pipe a Dockerfile into `-f -`")
        return data
    return None


def _read_upto(stream: BinaryIO, limit: int, what: str) -> bytes:
    """Up to `limit` bytes of `stream`, fewer only at its end (a pipe or a raw file may give fewer
    at a time)."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = stream.read(min(limit - total, _CHUNK))
        if not isinstance(chunk, bytes):
            raise UsageError(f"the {what} stream must be opened in binary mode", hint="use sys.stdin.buffer")
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def _write(path: Path, data: bytes) -> Path:
    with open(path, "xb") as f:
        f.write(data)
    return path


def _unpack(scratch: Path, head: bytes, stream: BinaryIO, fmt: str) -> Path:
    """Spool the archive (it is read twice: checked, then applied), check it and unpack it."""
    from layerbuild.worker.fetch import unpack_archive

    spooled = scratch / "context.archive"
    st = os.statvfs(scratch)
    room = st.f_bavail * st.f_frsize
    size = len(head)
    with open(spooled, "xb") as out:
        out.write(head)
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > room:
                raise UsageError(f"{ARCHIVE} is larger than the {room} bytes free where the store is",
                                 hint="free disk space in the store's filesystem, or send a smaller context")
            out.write(chunk)
    directory = scratch / "context"
    directory.mkdir()
    unpack_archive(os.fspath(spooled), fmt, directory, what=ARCHIVE, devices=False, whiteouts="keep")
    spooled.unlink()
    return directory


def _inside(directory: Path, name: str) -> Path:
    """The Dockerfile `name` (`-f`) inside the unpacked context, its symlinks resolved inside it."""
    from layerbuild.context.tree import SourceTree

    rel = name.lstrip("/")
    hint = "name the Dockerfile inside the archive with -f PATH (default: Dockerfile at its root)"
    try:
        entry = SourceTree(directory).resolve(rel)
    except LayerbuildError:
        entry = None  # a link that climbs out of the archive: there is no such file inside it
    if entry is None:
        raise UsageError(f"{ARCHIVE} has no {name}", hint=hint)
    if not entry.is_file:
        raise UsageError(f"{name} in {ARCHIVE} is not a regular file", hint=hint)
    return Path(entry.path)
