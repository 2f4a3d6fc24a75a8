"""Sandbox start-up: whole-process `layerbuild run IMAGE true`, the primitive alone, and the floor;
the default network (slirp4netns) against `--network none`, as a RUN step and as `run`.

Run: pytest benchmarks/bench_runtime.py --benchmark-only -s   (as root; needs busybox-static)
The floor is `unshare --fork --pid --mount true`, measured in the same run on the same machine: the
least any namespace sandbox started from a process can cost. The primitive is `run_step` in-process
(helper interpreter start, mounts, pivot_root, exec, wait) on an unpacked busybox image.
"""

from __future__ import annotations

import io
import json
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
from layerbuild.runtime import ProcessSpec, lower_dirs_for, run_step
from layerbuild.store import Store
from tests.runtime.conftest import busybox_tar

# Each command its own process, as these figures always were, and no daemon left behind (set
# LAYERBUILD_DAEMON otherwise to time through your daemon; bench_vs_buildkit times both).
os.environ.setdefault("LAYERBUILD_DAEMON", "0")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("run the runtime benchmarks as root")
    base = Path(tempfile.mkdtemp(prefix="lb-bench-runtime-"))
    with Store.open(base / "root") as store:
        import_rootfs(store, io.BytesIO(busybox_tar()), "busybox")
        lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)  # snapshot made once
    yield base / "root"
    shutil.rmtree(base, ignore_errors=True)


def test_floor_unshare(benchmark: Any) -> None:
    exe = shutil.which("unshare")
    if exe is None:
        pytest.skip("needs util-linux unshare")
    benchmark(subprocess.run, [exe, "--fork", "--pid", "--mount", "true"], check=True)


def test_run_step_true(benchmark: Any, root: Path) -> None:
    with Store.open(root) as store:
        lowers = lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)

    def once() -> None:
        scratch = Path(tempfile.mkdtemp(dir=root / "tmp"))
        result = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("true",)))
        assert result.exit_code == 0
        shutil.rmtree(scratch)

    benchmark(once)


def test_cli_run_true(benchmark: Any, root: Path) -> None:
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "busybox", "true"]
    benchmark(subprocess.run, argv, check=True, cwd=REPO)


@pytest.mark.parametrize("network", ["default", "none"])
def test_run_step_network(benchmark: Any, root: Path, network: str) -> None:
    """What the default network (a namespace plus slirp4netns) costs a RUN step over `none`."""
    with Store.open(root) as store:
        lowers = lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)

    def once() -> None:
        scratch = Path(tempfile.mkdtemp(dir=root / "tmp"))
        spec = ProcessSpec(argv=("true",), network=network)  # type: ignore[arg-type]
        assert run_step(lowers, scratch / "upper", scratch / "work", spec).exit_code == 0
        shutil.rmtree(scratch)

    benchmark(once)


@pytest.mark.parametrize("network", ["default", "none"])
def test_cli_run_network(benchmark: Any, root: Path, network: str) -> None:
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "--network", network,
            "busybox", "true"]
    benchmark(subprocess.run, argv, check=True, cwd=REPO)


def test_cli_run_tty_true(benchmark: Any, root: Path) -> None:
    """`run -t`: the same start with the container's own pty made and relayed (compare with the above)."""
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "-t", "busybox", "true"]
    benchmark(subprocess.run, argv, check=True, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def test_cli_run_tty_throughput(benchmark: Any, root: Path) -> None:
    """64 MiB written through `run -t`'s pty and relay (with its copy to the log), against the same
    without -t, where the container writes to /dev/null itself: the relay's cost per byte."""
    script = "head -c 67108864 /dev/zero"
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "-t", "busybox", "sh", "-c", script]
    benchmark(subprocess.run, argv, check=True, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def test_cli_run_plain_throughput(benchmark: Any, root: Path) -> None:
    script = "head -c 67108864 /dev/zero"
    argv = [sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "busybox", "sh", "-c", script]
    benchmark(subprocess.run, argv, check=True, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


@pytest.mark.parametrize("seccomp", ["default", "unconfined"])
def test_run_step_true_by_seccomp(benchmark: Any, root: Path, seccomp: str) -> None:
    """The primitive with the default profile (compiled once per process) and without a filter."""
    with Store.open(root) as store:
        lowers = lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)

    def once() -> None:
        scratch = Path(tempfile.mkdtemp(dir=root / "tmp"))
        result = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("true",), seccomp=seccomp))
        assert result.exit_code == 0
        shutil.rmtree(scratch)

    benchmark(once)


def test_compile_default_profile(benchmark: Any) -> None:
    """What a `layerbuild run` pays once for its filter: the default profile compiled by libseccomp."""
    from layerbuild.runtime import seccomp
    from layerbuild.runtime.spec import DEFAULT_CAPABILITIES

    benchmark(seccomp._compile.__wrapped__, json.dumps(seccomp.DEFAULT_PROFILE, sort_keys=True),
              frozenset(DEFAULT_CAPABILITIES))
