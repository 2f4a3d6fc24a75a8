"""Whole-process build times for the app and bigcopy scenarios: cold, no-op, touch, edit.

Run: .venv/bin/python -m pytest benchmarks/bench_build.py --benchmark-only
     (LAYERBUILD_BENCH_BIG_MB sets bigcopy's size, default 500; 0 skips it)
Each measurement runs `layerbuild build` as a new process, as a user or CI would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import edit_one, make_app, make_bigcopy, touch_one

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
EXE = str(Path(sys.executable).with_name("layerbuild"))
BIG_MB = int(os.environ.get("LAYERBUILD_BENCH_BIG_MB", "500"))


def build(ctx: Path, root: Path) -> None:
    subprocess.run([EXE, "--root", str(root), "build", "-q", "-t", "bench", str(ctx)], check=True,
                   stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_app(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def bigcopy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if BIG_MB <= 0:
        pytest.skip("LAYERBUILD_BENCH_BIG_MB=0")
    return make_bigcopy(tmp_path_factory.mktemp("big"), BIG_MB)


def _cold(benchmark, ctx: Path, tmp_path: Path, rounds: int) -> None:  # type: ignore[no-untyped-def]
    roots = iter(tmp_path / f"root{i}" for i in range(100))

    def setup() -> tuple[tuple[Path, Path], dict[str, object]]:
        root = next(roots)
        shutil.rmtree(root, ignore_errors=True)
        return (ctx, root), {}

    benchmark.pedantic(build, setup=setup, rounds=rounds, iterations=1)


def _warm(benchmark, ctx: Path, tmp_path: Path, change: Callable[[Path], None] | None, rounds: int) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    build(ctx, root)

    def setup() -> tuple[tuple[Path, Path], dict[str, object]]:
        if change is not None:
            change(ctx)
        return (ctx, root), {}

    benchmark.pedantic(build, setup=setup, rounds=rounds, iterations=1)


@pytest.mark.benchmark(group="app")
def test_app_cold(benchmark, app: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _cold(benchmark, app, tmp_path, 3)


@pytest.mark.benchmark(group="app")
def test_app_noop(benchmark, app: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _warm(benchmark, app, tmp_path, None, 10)


@pytest.mark.benchmark(group="app")
def test_app_touch(benchmark, app: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _warm(benchmark, app, tmp_path, touch_one, 5)


@pytest.mark.benchmark(group="app")
def test_app_edit(benchmark, app: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _warm(benchmark, app, tmp_path, edit_one, 5)


@pytest.mark.benchmark(group="bigcopy")
def test_bigcopy_cold(benchmark, bigcopy: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _cold(benchmark, bigcopy, tmp_path, 2)


@pytest.mark.benchmark(group="bigcopy")
def test_bigcopy_noop(benchmark, bigcopy: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _warm(benchmark, bigcopy, tmp_path, None, 5)


@pytest.mark.benchmark(group="bigcopy")
def test_bigcopy_edit(benchmark, bigcopy: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _warm(benchmark, bigcopy, tmp_path, edit_one, 3)
