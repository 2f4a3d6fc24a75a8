"""The BuildKit comparison (benchmarks/bench_vs_buildkit.py) runs at a tiny size without an engine:
every case of issue 14's table builds and the table prints. (Its figures come from full-size runs.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import find_busybox

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_the_buildkit_comparison_runs_without_an_engine(tmp_path: Path) -> None:
    if os.geteuid() != 0 or find_busybox() is None:
        pytest.skip("needs root and busybox-static (its RUN steps)")
    env = {**os.environ, "DOCKER": "/nonexistent/docker"}
    done = subprocess.run([sys.executable, "benchmarks/bench_vs_buildkit.py", "--rounds", "1", "--app-files", "20",
                           "--big-mb", "2", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "s.json")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "| case | layerbuild | no daemon | target |" in done.stdout
    cases = ("app cold", "app no-op", "app edit one file", "app touch one file", "multistage cold",
             "bigcopy cold", "bigcopy no-op", "bigcopy edit one file", "bigcopy touch one file",
             "run --rm IMAGE true")
    for case in cases:
        assert f"| {case} |" in done.stdout, done.stdout
    samples = json.loads((tmp_path / "s.json").read_text())["samples"]
    assert sorted(samples) == sorted(cases)
    assert all(len(v["layerbuild"]) >= 1 and len(v["no daemon"]) >= 1 for v in samples.values())


def test_the_benchmarks_python_starts_as_a_wheel_install_does(tmp_path: Path) -> None:
    """benchmarks/installed.py: layerbuild (this tree) and its dependencies import, and no
    development-install hook runs at start-up (the editable finder that site imports otherwise)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from installed import installed_python
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    python = installed_python(tmp_path)
    assert installed_python(tmp_path) == python  # made once
    probe = ("import sys, layerbuild, zstandard, lark, xxhash; "
             "print(layerbuild.__file__); print([m for m in sys.modules if 'editable' in m.lower()])")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    where, hooks = done.stdout.splitlines()
    assert Path(where) == REPO / "layerbuild" / "__init__.py" and hooks == "[]"


def test_the_bigcopy_memory_benchmark_reads_the_daemons_child(tmp_path: Path) -> None:
    """benchmarks/bench_bigcopy.py at a tiny size: through the daemon of its own (its peak and CPU
    from the daemon's log line for each build) and in its own process, a table of both; the daemon
    is stopped at the end (the session's guard would fail the run otherwise)."""
    done = subprocess.run([sys.executable, "benchmarks/bench_bigcopy.py", "--mb", "3", "--rounds", "1"],
                          cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:]}
    assert rows["case"] == ["case", "daemon", "this", "daemon/this"], done.stdout
    for case in ("cold", "cold_rss", "edit", "edit_rss", "client_rss"):
        assert case in rows, done.stdout
    daemon_rss, own_rss, client_rss = float(rows["cold_rss"][1]), float(rows["cold_rss"][3]), \
        float(rows["client_rss"][1])
    # The daemon's child holds all of layerbuild, the client only what hands a command over.
    assert daemon_rss > 2 * client_rss and own_rss > 2 * client_rss, done.stdout
