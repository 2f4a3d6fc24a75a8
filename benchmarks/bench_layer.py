"""Layer creation and extraction against `tar | zstd -3 -T2` and `zstd -d | tar -x` on the same tree, plus peak RSS.

Run: pytest benchmarks/bench_layer.py --benchmark-only -s
Sizes: LAYERBUILD_BENCH_MB (default 500) for the mixed tree, LAYERBUILD_BENCH_BIG_MB (default 2048) for the
memory check; LAYERBUILD_BENCH_ROUNDS (default 3). Ours and the reference run in the same session, so the
ratios printed at the end compare like with like; the minimum of the rounds is used (the machine is shared).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerbuild.layer import apply_layer, write_layer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_tree import generate

SIZE_MB = int(os.environ.get("LAYERBUILD_BENCH_MB", "500"))
BIG_MB = int(os.environ.get("LAYERBUILD_BENCH_BIG_MB", "2048"))
ROUNDS = int(os.environ.get("LAYERBUILD_BENCH_ROUNDS", "3"))
REPO = Path(__file__).resolve().parents[1]
RESULTS: dict[str, float] = {}

pytestmark = pytest.mark.skipif(
    shutil.which("zstd") is None or shutil.which("tar") is None,
    reason="the reference pipelines need zstd and tar (apt-get install -y zstd)",
)


@pytest.fixture(scope="module")
def work() -> Iterator[dict[str, Path]]:
    base = Path(tempfile.mkdtemp(prefix="layerbench-"))
    tree = base / "tree"
    generate(str(tree), SIZE_MB)
    blob = base / "ours.tar.zst"
    with open(blob, "wb") as f:
        write_layer(tree, f)  # also warms the page cache for everyone
    yield {"base": base, "tree": tree, "blob": blob}
    shutil.rmtree(base)


def _record(name: str, benchmark: Any) -> None:
    RESULTS[name] = benchmark.stats.stats.min


def _fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir()


def test_create_ours(benchmark: Any, work: dict[str, Path]) -> None:
    out = work["base"] / "create-ours.zst"

    def run() -> None:
        with open(out, "wb") as f:
            write_layer(work["tree"], f)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    _record("create_ours", benchmark)


def test_create_reference(benchmark: Any, work: dict[str, Path]) -> None:
    out = work["base"] / "create-ref.zst"
    cmd = f"tar -C '{work['tree']}' -c . | zstd -3 -T2 -q -f -o '{out}'"
    benchmark.pedantic(lambda: subprocess.run(cmd, shell=True, check=True), rounds=ROUNDS, iterations=1)
    _record("create_reference", benchmark)


def test_extract_ours(benchmark: Any, work: dict[str, Path]) -> None:
    dest = work["base"] / "x-ours"

    def run() -> None:
        with open(work["blob"], "rb") as f:
            apply_layer(f, dest)

    benchmark.pedantic(run, setup=lambda: _fresh(dest), rounds=ROUNDS, iterations=1)
    _record("extract_ours", benchmark)


def test_extract_reference(benchmark: Any, work: dict[str, Path]) -> None:
    dest = work["base"] / "x-ref"
    cmd = f"zstd -d -q -c '{work['blob']}' | tar -C '{dest}' -x"
    benchmark.pedantic(
        lambda: subprocess.run(cmd, shell=True, check=True),
        setup=lambda: _fresh(dest),
        rounds=ROUNDS,
        iterations=1,
    )
    _record("extract_reference", benchmark)


_RSS_CHILD = """
import resource, sys
from layerbuild.layer import write_layer
with open(sys.argv[2], "wb") as f:
    info = write_layer(sys.argv[1], f)
print(info.uncompressed_size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _big_tree(root: Path, total_mb: int) -> None:
    """Files that are mostly holes with random data every 16 MiB: big to tar, cheap to make."""
    root.mkdir()
    per_file = 256 * 1024 * 1024
    for i in range(max(1, total_mb * 1024 * 1024 // per_file)):
        with open(root / f"big{i}", "wb") as f:
            for off in range(0, per_file, 16 * 1024 * 1024):
                f.seek(off)
                f.write(os.urandom(256 * 1024))
            f.truncate(per_file)


def test_peak_rss_of_big_layer(work: dict[str, Path]) -> None:
    root = work["base"] / "big"
    _big_tree(root, BIG_MB)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(root), str(work["base"] / "big.zst")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    size, rss_kb = map(int, proc.stdout.split())
    RESULTS["big_layer_mb"] = size / 2**20
    RESULTS["peak_rss_mb"] = rss_kb / 1024
    assert rss_kb / 1024 < 200, f"peak RSS {rss_kb / 1024:.0f} MB for a {size / 2**20:.0f} MB layer"


def test_report_ratios() -> None:
    lines = [f"layer benchmark ({SIZE_MB} MB tree, {os.cpu_count()} CPUs, min of {ROUNDS} rounds)"]
    if {"create_ours", "create_reference"} <= RESULTS.keys():
        ratio = RESULTS["create_ours"] / RESULTS["create_reference"]
        lines.append(
            f"  create : ours {RESULTS['create_ours']:.2f}s  tar|zstd -3 -T2 {RESULTS['create_reference']:.2f}s"
            f"  ratio {ratio:.2f} (target <= 1.3)"
        )
    if {"extract_ours", "extract_reference"} <= RESULTS.keys():
        ratio = RESULTS["extract_ours"] / RESULTS["extract_reference"]
        lines.append(
            f"  extract: ours {RESULTS['extract_ours']:.2f}s  zstd -d|tar -x {RESULTS['extract_reference']:.2f}s"
            f"  ratio {ratio:.2f} (target <= 1.5)"
        )
    if "peak_rss_mb" in RESULTS:
        lines.append(
            f"  peak RSS writing a {RESULTS['big_layer_mb']:.0f} MB layer: {RESULTS['peak_rss_mb']:.0f} MB (target < 200)"
        )
    print("\n" + "\n".join(lines))
