"""The parser's input limits, and reading a Dockerfile from disk within them.

BuildKit's line scanner refuses a physical line longer than 65,535 bytes; layerbuild does the
same, with BuildKit's message. BuildKit has no limit on the whole file or on the number of
instructions, but both decide how much memory and time a parse takes, so they are bounded far
above what real Dockerfiles need (the largest public ones are well under 1 MiB and a few thousand
instructions). Every limit fails as a DockerfileSyntaxError at the line where it is crossed.

This module is stdlib-only and cheap to import: the no-op fast path reads the Dockerfile through it.
"""

from __future__ import annotations

import os
import stat

from layerbuild.errors import DockerfileSyntaxError, UsageError

MAX_LINE_BYTES = 65535  # BuildKit: bufio.MaxScanTokenSize - 1, line end not counted
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_INSTRUCTIONS = 100_000

_SHOWN = 120  # characters of an over-long line shown in the error


def _shown(line: bytes) -> str:
    text = line[:_SHOWN].decode("utf-8", "replace")
    return text + "…" if len(line) > _SHOWN else text


def check_size(data: bytes, filename: str) -> None:
    """Raise DockerfileSyntaxError if `data` is over the file or line limit; linear, no copies kept."""
    if len(data) > MAX_FILE_BYTES:
        line = data.count(b"\n", 0, MAX_FILE_BYTES) + 1
        start = data.rfind(b"\n", 0, MAX_FILE_BYTES) + 1
        raise DockerfileSyntaxError(
            f"dockerfile larger than max allowed size of {MAX_FILE_BYTES} bytes ({MAX_FILE_BYTES // 2**20} MiB)",
            filename=filename, line=line, column=1, source_line=_shown(data[start : start + _SHOWN + 1]),
            hint="a Dockerfile describes the build; large data belongs in files of the context, added with COPY",
        )  # fmt: skip
    if len(data) <= MAX_LINE_BYTES:
        return
    start = 0
    number = 1
    size = len(data)
    while start < size:
        end = data.find(b"\n", start)
        if end < 0:
            end = size
        if end - start > MAX_LINE_BYTES:
            raise DockerfileSyntaxError(
                f"dockerfile line greater than max allowed size of {MAX_LINE_BYTES}",
                filename=filename, line=number, column=1, source_line=_shown(data[start : start + _SHOWN + 1]),
                hint="split the line with a trailing \\ (continuation lines are joined into one instruction), "
                "or keep the data in a file of the context",
            )  # fmt: skip
        start = end + 1
        number += 1


def too_many_instructions(
    filename: str, line: int, source_line: str | None, limit: int = MAX_INSTRUCTIONS
) -> DockerfileSyntaxError:
    return DockerfileSyntaxError(
        f"dockerfile has more than the max allowed {limit} instructions",
        filename=filename, line=line, column=1,
        source_line=source_line[:_SHOWN] if source_line is not None else None,
        hint="split the build into several Dockerfiles, or join RUN commands with &&",
    )  # fmt: skip


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _check_kind(st: os.stat_result, name: str, hint: str, streams: bool) -> None:
    mode = st.st_mode
    if stat.S_ISREG(mode) or (streams and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode))):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    if streams:
        raise UsageError(f"cannot read {name}: it is {kind}", hint="give a regular file, or a pipe such as /dev/stdin")
    extra = "; to build from a pipe, save it to a file first" if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) else ""
    raise UsageError(f"cannot read {name}: it is {kind}, not a regular file",
                     hint="a Dockerfile must be a regular file" + extra + "; " + hint)


def read_dockerfile(path: str | os.PathLike[str], filename: str | None = None, *, streams: bool = False) -> bytes:
    """The bytes of the Dockerfile at `path`: a regular file (or a link to one).

    A build reads its Dockerfile more than once, so it must be a regular file. With `streams`
    (`layerbuild parse /dev/stdin`), a pipe or a terminal is read once, to its end. Opening never
    waits: a FIFO that no one writes to is refused instead of blocking for a writer. Reading
    stops past the size limit, so a growing file or an endless device cannot exhaust memory.
    Raises UsageError for what cannot be read as a Dockerfile and DockerfileSyntaxError past a limit.
    """
    name = filename if filename is not None else os.fspath(path)
    hint = "name the Dockerfile with -f, or add one to the context"
    try:
        _check_kind(os.stat(path), name, hint, streams)  # a socket cannot even be opened
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}", hint=hint) from None
    try:
        st = os.fstat(fd)
        _check_kind(st, name, hint, streams)  # what was opened, if the path changed meanwhile
        if not stat.S_ISREG(st.st_mode):
            # A FIFO without a writer reads as its end; one with a writer waits for its data.
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= MAX_FILE_BYTES:
            chunk = os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}", hint=hint) from None
    finally:
        os.close(fd)
    if not chunks and stat.S_ISFIFO(st.st_mode):
        raise UsageError(f"cannot read {name}: it is a FIFO (named pipe) and nothing was written to it",
                         hint="start what writes to it first, or give a regular file")
    return b"".join(chunks)
