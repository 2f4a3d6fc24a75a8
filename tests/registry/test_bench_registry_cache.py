"""The ephemeral-runner benchmark (benchmarks/bench_registry_cache.py) runs in CI at a small size:
every case builds through the loopback registry, the runner's cache is read, the figures print.
(Its speed figures come from full-size runs on a quiet machine; here it only has to work.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_the_ephemeral_runner_benchmark_runs(tmp_path: Path) -> None:
    env = {**os.environ, "LB_BENCH_BIG_MB": "8", "LB_BENCH_ROUNDS": "1", "DOCKER": "/nonexistent/docker"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                           "benchmarks/bench_registry_cache.py", "--benchmark-disable-gc",
                           f"--basetemp={tmp_path / 'bench'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for name in ("app", "bigcopy"):
        assert f"{name} ephemeral runner (1 rounds, medians):" in done.stdout, done.stdout[-4000:]
    assert done.stdout.count("unchanged: --cache-from") == 2 and done.stdout.count("edited: --cache-from") == 2
    assert "downloaded 0.0 MB; no cache" in done.stdout  # an edited bigcopy builds its one COPY
    assert "an export that brings nothing new" in done.stdout
    assert done.stdout.count("by one with nothing new 0 bytes") == 2  # uploaded nothing
