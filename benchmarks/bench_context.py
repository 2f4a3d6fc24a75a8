"""Build-context scanning and COPY keying: cold vs warm stat cache on 5,000 files (~50 MB), and the COPY layer.

Run: pytest benchmarks/bench_context.py --benchmark-only -s
LAYERBUILD_BENCH_FILES (default 5000) and LAYERBUILD_BENCH_FILE_KB (default 10) size the context. The
"process" figure is a whole `python -c` run (interpreter start, imports, store open, scan, key, save), the
cost a no-op rebuild pays for this step.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerbuild.context import tree as ctxmod
from layerbuild.context.tree import BuildContext
from layerbuild.store import Store
from layerbuild.worker.copy import select_copy, write_copy_layer

FILES = int(os.environ.get("LAYERBUILD_BENCH_FILES", "5000"))
FILE_KB = int(os.environ.get("LAYERBUILD_BENCH_FILE_KB", "10"))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("app")
    blob = os.urandom(FILE_KB * 1024)
    for i in range(FILES):
        d = root / "src" / f"pkg{i % 50:02d}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_bytes(blob[i % 97 :] + b"%d" % i)
    (root / "deps.txt").write_text("requests==2\n")
    old = time.time() - 3600  # older than the racy-stat margin, like a checkout
    for dirpath, _, names in os.walk(root):
        for n in names:
            os.utime(os.path.join(dirpath, n), (old, old))
    time.sleep(ctxmod.RACY_MARGIN_NS / 1e9 + 0.01)  # ctimes are "now": let them age past the margin
    yield root


def _key(root: Path, store: Store) -> tuple[str, BuildContext]:
    ctx = BuildContext.open(root, store=store)
    sel = select_copy(ctx, ["src/"], "./src/", workdir="/app")
    ctx.save()
    return sel.content_key, ctx


def test_scan_cold(benchmark: Any, app: Path, tmp_path: Path) -> None:
    counter = iter(range(10**6))

    def setup() -> tuple[tuple[Path, Store], dict[str, Any]]:
        return (app, Store.open(tmp_path / f"s{next(counter)}")), {}

    benchmark.pedantic(_key, setup=setup, rounds=5)
    _, ctx = _key(app, Store.open(tmp_path / "check"))
    print(f"\ncold: hashed {ctx.stats.hashed_files} files, {ctx.stats.hashed_bytes / 1e6:.1f} MB")


def test_scan_warm(benchmark: Any, app: Path, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "warm")
    _key(app, store)
    _, ctx = benchmark.pedantic(_key, args=(app, store), rounds=10, warmup_rounds=1)
    assert ctx.stats.hashed_files == 0 and ctx.stats.cache_hits == FILES


def test_write_copy_layer(benchmark: Any, app: Path) -> None:
    sel = select_copy(BuildContext.open(app), ["src/"], "./src/", workdir="/app")

    def run() -> int:
        buf = io.BytesIO()
        return write_copy_layer(sel, buf).size

    size = benchmark.pedantic(run, rounds=3)
    print(f"\nlayer: {size / 1e6:.1f} MB compressed")


def test_noop_whole_process(app: Path, tmp_path: Path) -> None:
    root = tmp_path / "proc"
    code = (
        "import sys; from layerbuild.store import Store; from layerbuild.context.tree import BuildContext;"
        "from layerbuild.worker.copy import select_copy;"
        "s = Store.open(sys.argv[1]); c = BuildContext.open(sys.argv[2], store=s);"
        "k = select_copy(c, ['src/'], './src/', workdir='/app').content_key; c.save(); print(k)"
    )
    cmd = [sys.executable, "-c", code, str(root), str(app)]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
    base = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t0)
    times.sort()
    print(
        f"\nno-op process (scan+key+save of {FILES} files): median {times[3] * 1000:.0f} ms, "
        f"min {times[0] * 1000:.0f} ms; bare interpreter {min(base) * 1000:.0f} ms"
    )
