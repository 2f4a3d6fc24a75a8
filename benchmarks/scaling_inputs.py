"""Dockerfiles that grow along one dimension, for the parser's scaling benchmarks.

Each generator takes a size (bytes of the growing part, or a count of instructions) and returns
the Dockerfile as bytes. Every physical line stays under BuildKit's 64 KiB line limit, so the
same inputs are valid for every parser that follows it.
"""

from __future__ import annotations

from collections.abc import Callable

CHUNK = 1000  # bytes per continuation line


def _continued(prefix: str, size: int, piece: str = "x") -> str:
    """`prefix` followed by `size` bytes of `piece`, spread over continuation lines."""
    line = piece * (CHUNK // len(piece))
    count = max(size // len(line), 1)
    return prefix + "\\\n".join([line] * count) + "\n"


def label_value(size: int) -> bytes:
    """One LABEL whose value is `size` bytes (continuation lines joined into one word)."""
    return ("FROM scratch\n" + _continued("LABEL big=", size)).encode()


def run_words(size: int) -> bytes:
    """One RUN of `size` bytes made of short words (the shell form, split into many words)."""
    return ("FROM scratch\n" + _continued("RUN echo ", size, "ab cd ")).encode()


def env_expansion(size: int) -> bytes:
    """An ENV value of `size` bytes, then a LABEL that expands it (the expander's output grows)."""
    return ("FROM scratch\n" + _continued("ENV BIG=", size) + "LABEL copy=$BIG\n").encode()


def env_trim(size: int) -> bytes:
    """An ENV value of `size` bytes, then `${BIG#*y}` and `${BIG%%x*y}`, patterns that match nowhere."""
    return ("FROM scratch\n" + _continued("ENV BIG=", size) + "LABEL a=${BIG#*y} b=${BIG%%x*y}\n").encode()


def heredoc_body(size: int) -> bytes:
    """A RUN heredoc whose body is `size` bytes of short lines."""
    lines = max(size // 40, 1)
    body = "".join(f"echo line {i:08d} of the heredoc body ...\n" for i in range(lines))
    return ("FROM scratch\nRUN <<EOF\n" + body + "EOF\n").encode()


def comments(size: int) -> bytes:
    """`size` bytes of comment lines between two instructions (the scanner pre-pass)."""
    line = "# " + "c" * 78 + "\n"
    return ("FROM scratch\n" + line * max(size // len(line), 1) + "LABEL a=b\n").encode()


def directive_line(size: int) -> bytes:
    """A first line of `size` bytes that reads as a parser directive with blanks inside its value
    (one physical line, so at most 64 KiB)."""
    return ("# syntax=a" + " " * (size - 12) + "b\nFROM scratch\nLABEL a=b\n").encode()


def instructions(count: int) -> bytes:
    """`count` small instructions in one stage (a mix of RUN, ENV, LABEL, WORKDIR, COPY)."""
    kinds = ["RUN echo {i}", "LABEL n{m}={i}", "ENV V{m}=x{i}", "WORKDIR /w{m}", "COPY a{i} /d/"]
    out = ["FROM scratch"]
    out += [kinds[i % len(kinds)].format(i=i, m=i % 50) for i in range(count)]
    return ("\n".join(out) + "\n").encode()


def env_names(count: int) -> bytes:
    """`count` ENV instructions, each setting a new name, then a RUN that sees them all."""
    out = ["FROM scratch"] + [f"ENV NAME{i}=value{i}" for i in range(count)] + ["RUN env"]
    return ("\n".join(out) + "\n").encode()


GENERATORS: dict[str, Callable[[int], bytes]] = {
    "label_value": label_value,
    "run_words": run_words,
    "env_expansion": env_expansion,
    "env_trim": env_trim,
    "heredoc_body": heredoc_body,
    "comments": comments,
    "directive_line": directive_line,
    "instructions": instructions,
    "env_names": env_names,
}
