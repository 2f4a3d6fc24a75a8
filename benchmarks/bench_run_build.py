"""Builds with RUN steps, whole process: a trivial RUN, the app scenario with a RUN that writes 5 MB
and sleeps 1 s (cold and no-op), and two independent 2-second stages copied into a final one.

Run: .venv/bin/python -m pytest benchmarks/bench_run_build.py --benchmark-only (as root; busybox-static).
The base image is a busybox rootfs imported once per run (`layerbuild import`).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.image import import_rootfs
from layerbuild.store import Store
from tests.runtime.conftest import busybox_tar

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import MULTISTAGE_DOCKERFILE

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
EXE = str(Path(sys.executable).with_name("layerbuild"))

APP = """\
FROM bb
WORKDIR /app
COPY deps.txt .
COPY src/ ./src/
RUN dd if=/dev/urandom of=/app/blob bs=1M count=5 2>/dev/null && sleep 1
ENV APP=1
CMD ["/app/src/run"]
"""

TRIVIAL = "FROM bb\nRUN true\n"


@pytest.fixture(scope="module")
def base_tar() -> bytes:
    return busybox_tar()


def fresh_root(path: Path, tar: bytes) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    with Store.open(path) as store:
        import_rootfs(store, io.BytesIO(tar), "bb")
    return path


def context(tmp: Path, dockerfile: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "Dockerfile").write_text(dockerfile)
    (tmp / "deps.txt").write_text("x\n")
    (tmp / "src").mkdir(exist_ok=True)
    for i in range(20):
        (tmp / "src" / f"m{i}.py").write_text(f"print({i})\n")
    return tmp


def build(ctx: Path, root: Path, *extra: str) -> None:
    subprocess.run([EXE, "--root", str(root), "build", "-q", *extra, "-t", "bench", str(ctx)], check=True,
                   stdout=subprocess.DEVNULL)


def _cold(benchmark, ctx: Path, tmp: Path, tar: bytes, rounds: int, *extra: str) -> None:  # type: ignore[no-untyped-def]
    counter = iter(range(1000))

    def setup() -> tuple[tuple[Path, Path], dict[str, object]]:
        return (ctx, fresh_root(tmp / f"root{next(counter)}", tar)), {}

    benchmark.pedantic(build, setup=setup, args=None, rounds=rounds, iterations=1)


@pytest.mark.benchmark(group="run-build")
def test_trivial_run_step(benchmark, tmp_path: Path, base_tar: bytes) -> None:  # type: ignore[no-untyped-def]
    ctx = context(tmp_path / "ctx", TRIVIAL)
    _cold(benchmark, ctx, tmp_path, base_tar, 5)


@pytest.mark.benchmark(group="run-build")
def test_app_with_run_cold(benchmark, tmp_path: Path, base_tar: bytes) -> None:  # type: ignore[no-untyped-def]
    ctx = context(tmp_path / "ctx", APP)
    _cold(benchmark, ctx, tmp_path, base_tar, 3)


@pytest.mark.benchmark(group="run-build")
def test_app_with_run_noop(benchmark, tmp_path: Path, base_tar: bytes) -> None:  # type: ignore[no-untyped-def]
    ctx = context(tmp_path / "ctx", APP)
    root = fresh_root(tmp_path / "root", base_tar)
    build(ctx, root)
    benchmark.pedantic(build, args=(ctx, root), rounds=10, iterations=1)


@pytest.mark.benchmark(group="run-build")
def test_multistage_parallel(benchmark, tmp_path: Path, base_tar: bytes) -> None:  # type: ignore[no-untyped-def]
    ctx = context(tmp_path / "ctx", MULTISTAGE_DOCKERFILE)
    _cold(benchmark, ctx, tmp_path, base_tar, 3)
