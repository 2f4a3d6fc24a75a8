"""Generate a benchmark source tree: thousands of small text files plus a few large, partly compressible binaries.

Usage: python benchmarks/gen_tree.py DEST [TOTAL_MB]. Deterministic for a given size (seeded), so runs compare.
"""

from __future__ import annotations

import os
import random
import sys

_WORDS = [
    "import",
    "def",
    "class",
    "return",
    "self",
    "value",
    "layer",
    "cache",
    "build",
    "image",
    "store",
    "digest",
    "none",
    "true",
    "false",
    "for",
    "in",
    "if",
    "else",
    "while",
    "try",
    "except",
    "raise",
    "with",
    "as",
    "from",
    "lambda",
    "yield",
    "async",
    "await",
    "print",
    "len",
    "range",
    "dict",
    "list",
    "str",
    "int",
    "the",
    "of",
    "and",
    "to",
    "a",
    "is",
    "that",
    "it",
    "was",
    "on",
    "for",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
]


def _text_corpus(rng: random.Random, size: int) -> bytes:
    lines: list[str] = []
    total = 0
    while total < size:
        line = "    " * rng.randrange(4) + " ".join(rng.choices(_WORDS, k=rng.randrange(3, 14))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def _binary(rng: random.Random, size: int) -> bytes:
    """Bytes zstd -3 shrinks to roughly half: a mix of 16-symbol noise, plain noise and repeats."""
    table = bytes(rng.randrange(256) & 0x0F | 0x40 for _ in range(256))
    out = bytearray()
    block = 64 * 1024
    while len(out) < size:
        roll = rng.random()
        if roll < 0.6:
            out += rng.randbytes(block).translate(table)
        elif roll < 0.85 or len(out) < block * 4:
            out += rng.randbytes(block)
        else:
            start = rng.randrange(max(0, len(out) - 1024 * 1024), len(out) - block)
            out += out[start : start + block]
    return bytes(out[:size])


def generate(dest: str, total_mb: int = 500, seed: int = 1) -> int:
    """Fill `dest` (created if missing) with about `total_mb` MB; returns the bytes written."""
    rng = random.Random(seed)
    total = total_mb * 1024 * 1024
    small_budget = total // 10
    corpus = _text_corpus(rng, 4 * 1024 * 1024)
    written = 0
    n_small = max(50, small_budget // (8 * 1024))
    for i in range(n_small):
        d = os.path.join(dest, "src", f"pkg{i % 40:02d}", f"mod{i % 7}")
        os.makedirs(d, exist_ok=True)
        size = min(int(rng.expovariate(1 / 8000)) + 10, 200_000)
        start = rng.randrange(0, len(corpus) - size)
        with open(os.path.join(d, f"file_{i:05d}.py"), "wb") as f:
            f.write(corpus[start : start + size])
        written += size
    big_dir = os.path.join(dest, "data")
    os.makedirs(big_dir, exist_ok=True)
    n_big = 8
    per_big = max(1, (total - written) // n_big)
    for i in range(n_big):
        with open(os.path.join(big_dir, f"blob{i}.bin"), "wb") as f:
            remaining = per_big
            while remaining > 0:
                piece = _binary(rng, min(remaining, 8 * 1024 * 1024))
                f.write(piece)
                remaining -= len(piece)
        written += per_big
    return written


if __name__ == "__main__":
    size_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(generate(sys.argv[1], size_mb))
