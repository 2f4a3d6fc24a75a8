"""`compose up -d` + `down` of a three-service project on its own network, against the same three
containers started by hand (`run -d` on a project network, then `rm -f`), and `--network none`
containers as the floor: what project networking and the compose machinery add. The same project in
the rootless fallback (one shared network namespace, forced with LAYERBUILD_NETWORK_BACKEND=shared),
and `exec` of `true` in a running container.

Run: pytest benchmarks/bench_compose.py --benchmark-only -s   (as root; needs busybox-static)
Whole processes (the CLI as a user runs it); each round starts from nothing and leaves nothing.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layerbuild.image import import_rootfs, resolve_image
from layerbuild.runtime import lower_dirs_for
from layerbuild.store import Store
from tests.runtime.conftest import busybox_tar

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
COMPOSE = """\
name: benchup
services:
  a: {image: busybox, command: [sleep, "300"], stop_grace_period: 0s}
  b: {image: busybox, command: [sleep, "300"], stop_grace_period: 0s, depends_on: [a]}
  c: {image: busybox, command: [sleep, "300"], stop_grace_period: 0s, depends_on: [b]}
"""


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("project networks need root")
    base = Path(tempfile.mkdtemp(prefix="lb-bench-compose-"))
    with Store.open(base / "root") as store:
        import_rootfs(store, io.BytesIO(busybox_tar()), "busybox")
        lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)
    (base / "compose.yaml").write_text(COMPOSE)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def lb(base: Path, *argv: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(base / "root"), *argv],
                          capture_output=True, text=True, check=True, env=None if env is None else {**os.environ, **env})
    return done.stdout


def test_compose_up_down(benchmark: Any, root: Path) -> None:
    def cycle() -> None:
        lb(root, "compose", "-f", str(root / "compose.yaml"), "up", "-d")
        lb(root, "compose", "-f", str(root / "compose.yaml"), "down", "-t", "0")

    benchmark.pedantic(cycle, rounds=5, warmup_rounds=1)


def test_reference_run_on_a_network(benchmark: Any, root: Path) -> None:
    def cycle() -> None:
        lb(root, "network", "create", "benchnet")
        ids = [lb(root, "run", "-d", "--network", "benchnet", "busybox", "sleep", "300").strip() for _ in range(3)]
        for cid in ids:
            lb(root, "rm", "-f", cid)
        lb(root, "network", "rm", "benchnet")

    benchmark.pedantic(cycle, rounds=5, warmup_rounds=1)


def test_floor_run_without_network(benchmark: Any, root: Path) -> None:
    def cycle() -> None:
        ids = [lb(root, "run", "-d", "--network", "none", "busybox", "sleep", "300").strip() for _ in range(3)]
        for cid in ids:
            lb(root, "rm", "-f", cid)

    benchmark.pedantic(cycle, rounds=5, warmup_rounds=1)


def test_compose_up_down_shared_namespace(benchmark: Any, root: Path) -> None:
    shared = {"LAYERBUILD_NETWORK_BACKEND": "shared"}

    def cycle() -> None:
        lb(root, "compose", "-f", str(root / "compose.yaml"), "up", "-d", env=shared)
        lb(root, "compose", "-f", str(root / "compose.yaml"), "down", "-t", "0", env=shared)

    benchmark.pedantic(cycle, rounds=5, warmup_rounds=1)


def test_exec_true(benchmark: Any, root: Path) -> None:
    cid = lb(root, "run", "-d", "--network", "none", "busybox", "sleep", "300").strip()
    try:
        benchmark.pedantic(lambda: lb(root, "exec", cid, "true"), rounds=10, warmup_rounds=1)
    finally:
        lb(root, "rm", "-f", cid)
