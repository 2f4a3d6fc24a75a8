"""bigcopy (one big `COPY data/ /data/`) cold and edit-one-file builds as whole processes, alternating:
medians of wall time, CPU time and peak memory.

Variants: `daemon`, this checkout as a user runs it (its first, untimed command started a daemon,
in a runtime directory of the benchmark's own, which runs each build in a child it forks; the
figures are that child's, from the daemon's log: its peak RSS counts the daemon's pages it
inherited, and the client's own is `client_rss`); `this`, this checkout with LAYERBUILD_DAEMON=0
(each build its own process: wait4's ru_maxrss); `ref`, the checkout `--ref DIR` (e.g. a `git
worktree` of main), its own process, when given.

Run: python benchmarks/bench_bigcopy.py [--ref DIR] [--mb 500] [--rounds 5]
     every variant runs with this interpreter, its checkout first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from installed import daemon_log, daemon_of_its_own
from scenarios import edit_one, make_bigcopy

HERE = Path(__file__).resolve().parent.parent
CASES = {"cold": "s", "cold_cpu": "s", "cold_rss": "MiB", "edit": "s", "edit_cpu": "s", "edit_rss": "MiB",
         "client_rss": "MiB"}
_LOGGED = re.compile(r" build: exit 0, [\d.]+ s, CPU ([\d.]+) s, peak RSS ([\d.]+) MiB$")


# A process's peak RSS counts the memory of whoever forked it, until it executes its program (the
# kernel keeps the larger of the two): so the build is started by a small interpreter of its own,
# not by this one, which holds the generated tree's bookkeeping. The spawner's 8-9 MiB are the floor.
_SPAWN = """\
import os, sys
fd, argv = int(sys.argv[1]), sys.argv[2:]
pid = os.posix_spawn(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
os.write(fd, f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}".encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(checkout: Path, root: Path, ctx: Path, env: dict[str, str]) -> tuple[float, float, float, float]:
    """One `layerbuild build` of `ctx` into `root` with the package of `checkout`: (wall seconds, peak
    MiB, CPU seconds: user + system, the figure a loaded machine disturbs least, and the peak MiB of
    the command's own process). Through a daemon (`env` names its runtime directory) the peak and the
    CPU are those of the child that ran the build, from the line the daemon logged for it."""
    env = dict(env, PYTHONPATH=str(checkout))
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "build", "-q", "-t", "bench", str(ctx)]
    log = daemon_log(env) if env.get("LAYERBUILD_DAEMON") != "0" else None
    logged = log.stat().st_size if log else 0
    read, write = os.pipe()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _SPAWN, str(write), *argv], env=env,
                            stdout=subprocess.DEVNULL, pass_fds=(write,))
    os.close(write)
    with os.fdopen(read) as f:
        said = f.read().split()
    code = proc.wait()
    elapsed = time.perf_counter() - start
    if code or len(said) != 2:
        raise SystemExit(f"build with {checkout} failed ({code})")
    own_rss, cpu = int(said[0]) / 1024, float(said[1])
    if log is None:
        return elapsed, own_rss, cpu, own_rss
    with log.open() as f:
        f.seek(logged)
        lines = [m for m in map(_LOGGED.search, f.read().splitlines()) if m]
    if len(lines) != 1:
        raise SystemExit(f"the daemon did not run the build (its log since: {len(lines)} builds)")
    return elapsed, float(lines[0][2]), float(lines[0][1]), own_rss


def rounds(variants: dict[str, Path], envs: dict[str, dict[str, str]], work: Path, ctx: Path,
           n: int) -> dict[str, dict[str, list[float]]]:
    """`n` cold builds (a new root each) and then `n` one-file edits per variant, alternating."""
    results: dict[str, dict[str, list[float]]] = {v: {c: [] for c in CASES} for v in variants}
    for i in range(n):
        for name in list(variants) if i % 2 == 0 else list(reversed(variants)):
            root = work / f"cold-{name}"
            shutil.rmtree(root, ignore_errors=True)
            t, rss, cpu, client = run(variants[name], root, ctx, envs[name])
            for case, value in (("cold", t), ("cold_cpu", cpu), ("cold_rss", rss), ("client_rss", client)):
                results[name][case].append(value)
    for name in variants:  # the roots the edits build on
        run(variants[name], work / f"warm-{name}", ctx, envs[name])
    for i in range(n):
        edit_one(ctx)
        for name in list(variants) if i % 2 == 0 else list(reversed(variants)):
            t, rss, cpu, client = run(variants[name], work / f"warm-{name}", ctx, envs[name])
            for case, value in (("edit", t), ("edit_cpu", cpu), ("edit_rss", rss), ("client_rss", client)):
                results[name][case].append(value)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, help="checkout of a layerbuild to compare with")
    parser.add_argument("--mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {"daemon": HERE, "this": HERE, **({"ref": args.ref.resolve()} if args.ref else {})}
    work = Path(tempfile.mkdtemp(prefix="bench-bigcopy-"))
    try:
        ctx = make_bigcopy(work / "ctx", args.mb)
        own = {**os.environ, "LAYERBUILD_DAEMON": "0"}
        with daemon_of_its_own(sys.executable, work, env={"PYTHONPATH": str(HERE)}) as through:
            envs = {"daemon": through, "this": own, "ref": own}
            results = rounds(variants, envs, work, ctx, args.rounds)
        load = os.getloadavg()
        print(f"bigcopy {args.mb} MB, {args.rounds} rounds, {os.cpu_count()} CPUs, "
              f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
        print(f"{'case':<11}" + "".join(f"{name:>14}" for name in variants)
              + "".join(f"{name + '/this':>12}" for name in variants if name != "this"))
        for case, unit in CASES.items():
            got = {name: statistics.median(results[name][case]) for name in variants}
            print(f"{case:<11}" + "".join(f"{got[name]:>10.3f} {unit:<3}" for name in variants)
                  + "".join(f"{got[name] / got['this']:>12.2f}" for name in variants if name != "this"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
