"""bigcopy (one big `COPY data/ /data/`) cold and edit-one-file builds of this checkout against a
reference checkout of layerbuild, as whole processes, alternating A/B: medians of wall time and of
peak RSS (the child's ru_maxrss).

Run: python benchmarks/bench_bigcopy.py --ref DIR [--mb 500] [--rounds 5]
     DIR is a checkout of the layerbuild to compare with (e.g. a `git worktree` of main); it is run
     with this interpreter, its package first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scenarios import edit_one, make_bigcopy

HERE = Path(__file__).resolve().parent.parent


def run(checkout: Path, root: Path, ctx: Path) -> tuple[float, int]:
    """One `layerbuild build` of `ctx` into `root` with the package of `checkout`: (seconds, peak KiB)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "build", "-q", "-t", "bench", str(ctx)]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"build with {checkout} failed ({proc.returncode})")
    return elapsed, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, type=Path, help="checkout of the layerbuild to compare with")
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {"this": HERE, "ref": args.ref.resolve()}
    work = Path(tempfile.mkdtemp(prefix="bench-bigcopy-"))
    try:
        ctx = make_bigcopy(work / "ctx", args.mb)
        results: dict[str, dict[str, list[float]]] = {v: {"cold": [], "cold_rss": [], "edit": [], "edit_rss": []}
                                                      for v in variants}
        for i in range(args.rounds):
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:  # cold: a new root each time
                root = work / f"cold-{name}"
                shutil.rmtree(root, ignore_errors=True)
                t, rss = run(variants[name], root, ctx)
                results[name]["cold"].append(t)
                results[name]["cold_rss"].append(rss / 1024)
        for name in variants:  # the roots the edits build on
            run(variants[name], work / f"warm-{name}", ctx)
        for i in range(args.rounds):
            edit_one(ctx)
            order = list(variants) if i % 2 == 0 else list(reversed(variants))
            for name in order:
                t, rss = run(variants[name], work / f"warm-{name}", ctx)
                results[name]["edit"].append(t)
                results[name]["edit_rss"].append(rss / 1024)
        load = os.getloadavg()
        print(f"bigcopy {args.mb} MB, {args.rounds} rounds, {os.cpu_count()} CPUs, "
              f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{'case':<10}{'this':>14}{'ref':>14}{'ratio':>8}")
        for case, unit in (("cold", "s"), ("cold_rss", "MiB"), ("edit", "s"), ("edit_rss", "MiB")):
            a = statistics.median(results["this"][case])
            b = statistics.median(results["ref"][case])
            print(f"{case:<10}{a:>10.3f} {unit:<3}{b:>10.3f} {unit:<3}{a / b:>8.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
