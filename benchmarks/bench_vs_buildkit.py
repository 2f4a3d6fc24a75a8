"""Issue 14's table: layerbuild against Docker's BuildKit, whole processes, alternating, medians.

Cases: app (5,000 files, a RUN writing 5 MB and sleeping 1 s before the `COPY src/`) cold, no-op,
one file edited, one file touched (mtime only); multistage cold (two independent 2 s RUN stages
copied into a final one); bigcopy (one `COPY` of ~500 MB) cold, no-op, one file edited, one file
touched; and `run --rm IMAGE true`. Every round runs each tool once per case, in turn (A/B/A/B),
on the same context; a change (edit, touch) is made once per round, before the tools build, so each
tool sees exactly one change since its own last build. Cold means an empty store holding only the
base for layerbuild, and `docker builder prune -af` (the base image kept) for BuildKit.

References, each measured in the same run when available: BuildKit when a docker engine answers
(`$DOCKER version`; `DOCKER_HOST` picks the engine, `DOCKER_BUILD_NETWORK=host` is passed to its
builds and runs for an engine without a bridge, and then to layerbuild's too, so both give RUN steps
and containers the same network), and the layerbuild of another source tree
(`--baseline-src DIR`, e.g. a `git worktree` of main), run with the same interpreter and packages.
Both layerbuilds start as a wheel install would, without the development install's import hook
(benchmarks/installed.py: about 20 ms of every process).
The base for both is a busybox-static rootfs made here (`layerbuild import`, `docker import`).
Columns: `layerbuild` is the command as a user runs it (its first, untimed command finds no daemon and
starts one, which runs the rest, as BuildKit's daemon runs docker's builds); `no daemon` the same
tree with LAYERBUILD_DAEMON=0 (every command its own process); `baseline` the other tree, its own process.

Run (as root, from the repository):
    .venv/bin/python benchmarks/bench_vs_buildkit.py [--rounds 5] [--big-mb 500] [--baseline-src DIR]
Prints the machine (CPUs, load before and after) and a markdown table the README's is made from;
`--json FILE` also writes every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))
from installed import installed_python, start_daemon  # noqa: E402
from scenarios import MULTISTAGE_DOCKERFILE, edit_one, make_app, make_bigcopy, touch_one  # noqa: E402

DOCKER = os.environ.get("DOCKER", "docker")
NETWORK = [f"--network={os.environ['DOCKER_BUILD_NETWORK']}"] if os.environ.get("DOCKER_BUILD_NETWORK") else []

APP = """\
FROM bb
WORKDIR /app
COPY deps.txt .
RUN dd if=/dev/urandom of=/app/blob bs=1M count=5 2>/dev/null && sleep 1
COPY src/ ./src/
ENV APP_ENV=production
CMD ["/app/src/main"]
"""

# (case, target ratio to BuildKit, or an absolute target in seconds for `run`)
TARGETS = {
    "app cold": 0.6, "app no-op": 0.5, "app edit one file": 0.35, "app touch one file": 0.5,
    "multistage cold": 0.95, "bigcopy cold": 0.45, "bigcopy no-op": 0.4, "bigcopy edit one file": 0.25,
    "bigcopy touch one file": 0.5,
}

# Runs the layerbuild of a source tree with this interpreter's packages: its directory goes first on
# the path and an editable install's finder, which would answer first, is left out.
_LAUNCH = (
    "import sys\n"
    "src = sys.argv.pop(1)\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in type(f).__module__.lower()]\n"
    "sys.path.insert(0, src)\n"
    "try:\n"
    "    from layerbuild.cli.launch import entry\n"
    "except ImportError:  # a tree from before the daemon\n"
    "    from layerbuild.cli.main import entry\n"
    "sys.argv[0] = 'layerbuild'\n"
    "entry()\n"
)


def docker_answers() -> bool:
    if shutil.which(DOCKER) is None and not os.path.isfile(DOCKER):
        return False
    try:
        return subprocess.run([DOCKER, "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def timed(argv: list[str], **kw: object) -> float:
    os.sync()  # (untimed) what the build before wrote or removed is on disk: no tool pays another's writeback
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, **kw)  # type: ignore[call-overload]
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr.decode(errors='replace')[-3000:]}")
    return took


@dataclass
class Tool:
    """One builder under test: how it builds, rebuilds from cold, and runs a container."""

    name: str
    build: Callable[[Path, str], float]
    cold: Callable[[str], None]  # forget everything but the base (untimed)
    run_true: Callable[[], float] | None = None


@dataclass
class Layerbuild:
    src: Path
    work: Path
    base_tar: Path
    label: str
    # As a user runs it: the first command finds no daemon and starts one (in a runtime directory
    # of the benchmark's own), which runs the rest; else its own process (LAYERBUILD_DAEMON=0).
    daemon: bool = False
    roots: dict[str, Path] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "LAYERBUILD_DAEMON"}
        if not self.daemon:
            env["LAYERBUILD_DAEMON"] = "0"  # its own process, whatever daemon runs
        else:
            runtime = self.work / f"xdg-{self.label}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            env["XDG_RUNTIME_DIR"] = str(runtime)
        return env

    def argv(self, root: Path, *args: str) -> list[str]:
        return [installed_python(self.work), "-c", _LAUNCH, str(self.src), "--root", str(root), *args]

    def root(self, key: str) -> Path:
        if key not in self.roots:
            self.roots[key] = self.fresh(key)
        return self.roots[key]

    def fresh(self, key: str) -> Path:
        root = self.work / f"{self.label}-{key}"
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(self.argv(root, "import", str(self.base_tar), "bb"), check=True, capture_output=True,
                       env=self.env)
        self.roots[key] = root
        return root

    def build(self, ctx: Path, key: str) -> float:
        return timed(self.argv(self.root(key), "build", "-q", *NETWORK, "-t", f"bench-{key}", str(ctx)), env=self.env)

    def cold(self, key: str) -> None:
        self.fresh(key)

    def run_true(self) -> float:
        return timed(self.argv(self.root("run"), "run", "--rm", *NETWORK, "bb", "true"), env=self.env)

    def stop(self) -> None:
        if self.daemon:
            subprocess.run(self.argv(self.work / "unused", "daemon", "stop"), capture_output=True, env=self.env)

    def tool(self) -> Tool:
        # Byte-compiled first, as an installed package is: an environment with PYTHONDONTWRITEBYTECODE
        # would otherwise compile every module of a fresh tree in every process.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(self.src / "layerbuild")], check=True,
                       capture_output=True)
        if self.daemon:  # a first command (untimed) starts it; the timing starts once it answers
            start_daemon([installed_python(self.work), "-c", _LAUNCH, str(self.src)], self.env, self.work / "unused")
        return Tool(self.label, self.build, self.cold, self.run_true)


def buildkit(base_tar: Path) -> Tool:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    subprocess.run([DOCKER, "import", str(base_tar), "bb"], check=True, capture_output=True, env=env)

    def build(ctx: Path, key: str) -> float:
        return timed([DOCKER, "build", "-q", *NETWORK, "-t", f"bench-{key}", str(ctx)], env=env)

    def cold(key: str) -> None:
        subprocess.run([DOCKER, "builder", "prune", "-af"], check=True, capture_output=True, env=env)

    def run_true() -> float:
        return timed([DOCKER, "run", "--rm", *NETWORK, "bb", "true"], env=env)

    return Tool("BuildKit", build, cold, run_true)


def base_rootfs(path: Path) -> Path:
    from tests.runtime.conftest import busybox_tar

    path.write_bytes(busybox_tar())
    return path


def machine() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def app_context(dest: Path, files: int) -> Path:
    make_app(dest, files=files)
    (dest / "Dockerfile").write_text(APP)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big-mb", type=int, default=500, help="bigcopy's size (0: leave bigcopy out)")
    parser.add_argument("--app-files", type=int, default=5000)
    parser.add_argument("--baseline-src", metavar="DIR", help="another source tree's layerbuild as a reference")
    parser.add_argument("--daemon", action="store_true",
                        help="(always on now: `layerbuild` is the command as users run it, with the daemon "
                             "its first run starts; `no daemon` the same with LAYERBUILD_DAEMON=0)")
    parser.add_argument("--cases", default="", help="comma-separated case prefixes to run (default: all)")
    parser.add_argument("--json", metavar="FILE", help="write every sample there")
    parser.add_argument("--work", metavar="DIR", help="scratch directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="lb-vs-bk-"))
    work.mkdir(parents=True, exist_ok=True)
    base_tar = base_rootfs(work / "busybox.tar")
    ours = [Layerbuild(REPO, work, base_tar, "layerbuild", daemon=True),
            Layerbuild(REPO, work, base_tar, "no daemon")]
    tools = [lb.tool() for lb in ours]
    if args.baseline_src:
        tools.append(Layerbuild(Path(args.baseline_src).resolve(), work, base_tar, "baseline").tool())
    engine = docker_answers()
    if engine:
        tools.append(buildkit(base_tar))
    before = machine()
    samples: dict[str, dict[str, list[float]]] = {}
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]

    def want(case: str) -> bool:
        return not wanted or any(case.startswith(w) for w in wanted)

    def rounds(case: str, key: str, ctx: Path, change: Callable[[Path], None] | None, cold: bool) -> None:
        if not want(case):
            return
        for tool in tools:  # the state each warm case starts from: one build
            if not cold:
                tool.build(ctx, key)
        got: dict[str, list[float]] = {t.name: [] for t in tools}
        for i in range(args.rounds):
            if change is not None:
                change(ctx)
            order = tools if i % 2 == 0 else tools[::-1]
            for tool in order:
                if cold:
                    tool.cold(key)
                got[tool.name].append(tool.build(ctx, key))
        samples[case] = got
        print(f"  {case}: " + ", ".join(f"{n} {statistics.median(v):.3f} s" for n, v in got.items()),
              file=sys.stderr, flush=True)

    app = app_context(work / "app", args.app_files)
    rounds("app cold", "app", app, None, cold=True)
    rounds("app no-op", "app", app, None, cold=False)
    rounds("app edit one file", "app", app, edit_one, cold=False)
    rounds("app touch one file", "app", app, touch_one, cold=False)
    multi = work / "multi"
    multi.mkdir(exist_ok=True)
    (multi / "Dockerfile").write_text(MULTISTAGE_DOCKERFILE)
    rounds("multistage cold", "multi", multi, None, cold=True)
    if args.big_mb > 0 and any(want(c) for c in TARGETS if c.startswith("bigcopy")):
        big = make_bigcopy(work / "big", args.big_mb)
        rounds("bigcopy cold", "big", big, None, cold=True)
        rounds("bigcopy no-op", "big", big, None, cold=False)
        rounds("bigcopy edit one file", "big", big, edit_one, cold=False)
        rounds("bigcopy touch one file", "big", big, touch_one, cold=False)
    if want("run"):
        got: dict[str, list[float]] = {t.name: [] for t in tools if t.run_true is not None}
        for tool in tools:
            if tool.run_true is not None:
                tool.run_true()  # its snapshot made, the image unpacked once
        for i in range(max(args.rounds, 5)):
            for tool in tools if i % 2 == 0 else tools[::-1]:
                if tool.run_true is not None:
                    got[tool.name].append(tool.run_true())
        samples["run --rm IMAGE true"] = got
    for lb in ours:
        lb.stop()
    after = machine()
    print(render(samples, [t.name for t in tools], before, after, args.rounds))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": [before, after], "samples": samples}, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def render(samples: dict[str, dict[str, list[float]]], names: list[str], before: str, after: str,
           rounds: int) -> str:
    """The table: each tool's median, then each layerbuild's ratio to BuildKit (to `baseline` when
    no BuildKit ran), and the target."""
    ref = "BuildKit" if "BuildKit" in names else "baseline" if "baseline" in names else None
    ratioed = [n for n in names if ref is not None and n not in (ref, "BuildKit", "baseline")]
    if ref == "BuildKit" and "baseline" in names:
        ratioed.append("baseline")
    head = ["case", *names, *(f"{n} / {ref}" for n in ratioed), "target"]
    lines = [f"Machine: {before} before, {after} after; medians of {rounds} alternating rounds "
             "(run: at least 5).", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for case, got in samples.items():
        cells = [case, *(f"{statistics.median(got[n]):.3f} s" for n in names)]
        cells += [f"{statistics.median(got[n]) / statistics.median(got[ref]):.2f}" for n in ratioed if ref]
        target = TARGETS.get(case)
        cells.append(f"≤ {target}" if target is not None else "≤ 0.10 s")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
