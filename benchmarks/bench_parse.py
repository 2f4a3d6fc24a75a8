"""Parser speed: a 300-instruction Dockerfile, the whole conformance suite, and building the parser.

Run: .venv/bin/python -m pytest benchmarks/bench_parse.py --benchmark-only
Each benchmark stores `instructions_per_s` in its extra_info.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerbuild.parser import parse
from layerbuild.parser.core import line_grammar
from tests.conftest import REPO, conformance_root

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")


def big_dockerfile(n: int = 300) -> str:
    """A realistic long Dockerfile: stages, RUN chains with continuations, COPY/ENV/LABEL, heredocs."""
    out = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:12"]
    for i in range(1, n):
        block = i % 6
        if block == 0:
            out.append(f"FROM ${{BASE}} AS stage{i}")
        elif block == 1:
            out += [
                "RUN --mount=type=cache,target=/var/cache/apt apt-get update && \\",
                f"    apt-get install -y --no-install-recommends pkg{i} tool{i} \\",
                "    # a comment inside the continuation",
                "    && rm -rf /var/lib/apt/lists/*",
            ]
        elif block == 2:
            out.append(f'COPY --chown=1000:1000 --chmod=0644 ["src/{i}", "/app/{i}/"]')
        elif block == 3:
            out.append(f'ENV KEY{i}="value {i}" OTHER{i}=${{KEY{i}:-x}} PATH=/opt/{i}/bin:$PATH')
        elif block == 4:
            out += [f"RUN <<EOF{i}", "set -e", f"echo {i} > /tmp/{i}", f"EOF{i}"]
        else:
            out.append(f'LABEL org.example.n{i}="{i}" description="step {i}"')
    return "\n".join(out) + "\n"


def conformance_files() -> list[bytes]:
    root = conformance_root()
    assert root is not None
    files = [p.read_bytes() for p in sorted(root.rglob("Dockerfile"))]
    files += [p.read_bytes() for p in sorted((REPO / "samples").glob("*/Dockerfile"))]
    return files


def _parse_all(files: list[bytes]) -> int:
    count = 0
    for data in files:
        try:
            count += len(parse(data).instructions)
        except Exception:
            pass
    return count


@pytest.mark.benchmark(group="parse")
def test_parse_300_instructions(benchmark) -> None:  # type: ignore[no-untyped-def]
    text = big_dockerfile()
    line_grammar()
    result = benchmark(parse, text)
    n = len(result.instructions)
    assert n >= 300
    benchmark.extra_info["instructions"] = n
    benchmark.extra_info["instructions_per_s"] = round(n / benchmark.stats.stats.median)


@pytest.mark.benchmark(group="parse")
def test_parse_conformance_suite(benchmark) -> None:  # type: ignore[no-untyped-def]
    files = conformance_files()
    line_grammar()
    n = benchmark(_parse_all, files)
    benchmark.extra_info["files"] = len(files)
    benchmark.extra_info["instructions_per_s"] = round(n / benchmark.stats.stats.median)


@pytest.mark.benchmark(group="startup")
def test_build_parser_from_disk_cache(benchmark) -> None:  # type: ignore[no-untyped-def]
    line_grammar()  # make sure the on-disk cache exists

    def build() -> None:
        line_grammar.cache_clear()
        line_grammar()

    benchmark(build)


@pytest.mark.benchmark(group="startup")
def test_cli_parse_whole_process(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`layerbuild parse --json` as a process; `python -c pass` measured alongside as the floor."""
    df = tmp_path / "Dockerfile"
    df.write_text(big_dockerfile(30))
    exe = str(Path(sys.executable).with_name("layerbuild"))

    def floor() -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - t

    floors = sorted(floor() for _ in range(5))
    benchmark.extra_info["python_floor_s"] = round(floors[2], 4)
    benchmark.pedantic(
        subprocess.run,
        args=([exe, "parse", "--json", str(df)],),
        kwargs={"check": True, "stdout": subprocess.DEVNULL},
        rounds=10,
        iterations=1,
    )
