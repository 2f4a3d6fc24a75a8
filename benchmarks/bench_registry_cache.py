"""The ephemeral CI runner: an empty store that builds with `--cache-from` a local docker-registry, for
the app and bigcopy scenarios, unchanged and with one file edited, as whole processes, alternating with
the references measured in the same run: the same build with no cache at all (what a runner without a
shared cache does) and, when a docker engine answers (`docker version`), BuildKit with its inline cache
(`docker build --cache-from REF` of an image built with BUILDKIT_INLINE_CACHE=1 and pushed to the same
registry, after `docker builder prune -af`). Also: bytes downloaded by the runner and uploaded by an
export (the first, and one that brings nothing new), and the time of an export that brings nothing new.

Run: .venv/bin/python -m pytest benchmarks/bench_registry_cache.py -s   (LB_BENCH_BIG_MB, default 500)
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from installed import installed_python
from scenarios import edit_one, make_app, make_bigcopy

from tests.registry.kit import Registry, start_registry

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
REPO = Path(__file__).resolve().parents[1]
LB = [installed_python(), "-m", "layerbuild"]
BIG_MB = int(os.environ.get("LB_BENCH_BIG_MB", "500"))
ROUNDS = int(os.environ.get("LB_BENCH_ROUNDS", "3"))
DOCKER = os.environ.get("DOCKER", "docker")
# `DOCKER_BUILD_NETWORK=host` for an engine started without its bridge (dockerd --bridge=none): RUN
# steps then share the host's network, which changes nothing of what the cache does.
NETWORK = [f"--network={os.environ['DOCKER_BUILD_NETWORK']}"] if os.environ.get("DOCKER_BUILD_NETWORK") else []


def _docker_answers() -> bool:
    if shutil.which(DOCKER) is None:
        return False
    return subprocess.run([DOCKER, "version"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    base = Path(tempfile.mkdtemp(prefix="lb-bench-cache-"))
    reg = start_registry("plain", base / "registry")
    try:
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, cwd=REPO)
    return time.monotonic() - started


def _timed_download(argv: list[str]) -> tuple[float, float]:
    """Seconds, and the MB the build says it downloaded from the imported caches."""
    started = time.monotonic()
    at = argv.index("build") + 1
    done = subprocess.run([*argv[:at], "--progress", "plain", *argv[at:]], check=True, capture_output=True,
                          cwd=REPO, text=True)
    took = time.monotonic() - started
    assert "could not be read" not in done.stderr and "refused" not in done.stderr, done.stderr
    line = next((x for x in done.stderr.splitlines() if x.startswith("imported caches:")), "")
    mb = float(line.rsplit("(", 1)[1].split()[0]) if "downloaded" in line else 0.0
    return took, mb


def _sent(stderr: str, ref: str) -> int:
    """The bytes an export says it sent (`cache REF: written (N records, B bytes sent)`)."""
    line = next(x for x in stderr.splitlines() if x.startswith(f"cache {ref}: "))
    return int(line.rsplit("(", 1)[1].split(", ")[1].split()[0])


def _case(name: str, ctx: Path, registry: Registry, work: Path, benchmark: Any) -> None:
    ref = f"{registry.host}/bench/{name}:cache"
    exporter = work / f"{name}-exporter"
    first = subprocess.run([*LB, "--root", str(exporter), "build", "--progress", "plain", "--cache-to", ref,
                            str(ctx)], check=True, capture_output=True, cwd=REPO, text=True)
    uploaded = _sent(first.stderr, ref)
    # An export with nothing new, against the same no-op build without it.
    noop_export = [_timed([*LB, "--root", str(exporter), "build", "-q", "--cache-to", ref, str(ctx)])
                   for _ in range(5)]
    noop_plain = [_timed([*LB, "--root", str(exporter), "build", "-q", "--no-cache-filter", "none", str(ctx)])
                  for _ in range(5)]
    again = subprocess.run([*LB, "--root", str(exporter), "build", "--progress", "plain", "--cache-to", ref,
                            str(ctx)], check=True, capture_output=True, cwd=REPO, text=True)
    uploaded_again = _sent(again.stderr, ref)
    docker = _docker_answers()
    image = f"{registry.host}/bench/{name}-bk:inline"
    if docker:
        subprocess.run([DOCKER, "build", "-q", *NETWORK, "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", image,
                        str(ctx)], check=True, capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        subprocess.run([DOCKER, "push", image], check=True, capture_output=True)
    results: dict[str, dict[str, list[float]]] = {}
    downloaded: dict[str, float] = {}
    for variant in ("unchanged", "edited"):
        if variant == "edited":
            edit_one(ctx)
        ours: list[float] = []
        cold: list[float] = []
        bk: list[float] = []
        for i in range(ROUNDS):
            runner = work / f"{name}-{variant}-runner{i}"
            took, mb = _timed_download([*LB, "--root", str(runner), "build", "--cache-from", ref, str(ctx)])
            ours.append(took)
            downloaded[variant] = mb
            shutil.rmtree(runner)
            fresh = work / f"{name}-{variant}-cold{i}"
            cold.append(_timed([*LB, "--root", str(fresh), "build", "-q", str(ctx)]))
            shutil.rmtree(fresh)
            if docker:
                subprocess.run([DOCKER, "builder", "prune", "-af"], capture_output=True)
                subprocess.run([DOCKER, "rmi", "-f", image], capture_output=True)
                bk.append(_timed([DOCKER, "build", "-q", *NETWORK, "--cache-from", image, str(ctx)]))
        results[variant] = {"layerbuild": ours, "no_cache": cold, **({"buildkit": bk} if bk else {})}
    lines = [f"\n{name} ephemeral runner ({ROUNDS} rounds, medians):"]
    for variant, got in results.items():
        a, c = statistics.median(got["layerbuild"]), statistics.median(got["no_cache"])
        line = (f"  {variant}: --cache-from {a:.2f} s, downloaded {downloaded[variant]:.1f} MB; "
                f"no cache {c:.2f} s (ratio {a / c:.2f})")
        if "buildkit" in got:
            b = statistics.median(got["buildkit"])
            line += f"; BuildKit inline cache {b:.2f} s (ratio {a / b:.2f})"
        lines.append(line)
    ne, npl = statistics.median(noop_export), statistics.median(noop_plain)
    lines.append(f"  no-op build with an export that brings nothing new {ne:.3f} s, without --cache-to "
                 f"{npl:.3f} s (the export's cost {ne - npl:+.3f} s)")
    lines.append(f"  uploaded by the first export {uploaded / 1e6:.1f} MB, by one with nothing new {uploaded_again} bytes")
    print("\n".join(lines))
    benchmark.extra_info.update(json.loads(json.dumps({"results": results, "downloaded": downloaded,
                                                       "noop_export_s": ne, "noop_s": npl,
                                                       "uploaded": uploaded, "uploaded_nothing_new": uploaded_again})))
    benchmark.pedantic(lambda: None, rounds=1)


def test_app(registry: Registry, tmp_path: Path, benchmark: Any) -> None:
    _case("app", make_app(tmp_path / "ctx"), registry, tmp_path, benchmark)


def test_bigcopy(registry: Registry, tmp_path: Path, benchmark: Any) -> None:
    if BIG_MB <= 0:
        pytest.skip("LB_BENCH_BIG_MB=0")
    _case("bigcopy", make_bigcopy(tmp_path / "ctx", BIG_MB), registry, tmp_path, benchmark)
