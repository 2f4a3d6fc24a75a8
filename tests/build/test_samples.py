"""Every sample builds, rebuilds from cache and runs (the quick start's promise, checked in CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import layerbuild
from tests.conftest import REPO

pytestmark = pytest.mark.integration

SAMPLES = sorted(p.parent for p in (REPO / "samples").glob("*/Dockerfile"))
EXPECTED_OUTPUT = {
    "hello": "hello from layerbuild\nrunning as 1000 in /app\n",
    "multistage": "left\nright\n",
    "cache-mount": "1\n",
}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample(sample: Path, tmp_path: Path) -> None:
    ctx = tmp_path / sample.name
    shutil.copytree(sample, ctx, ignore=shutil.ignore_patterns("busybox"))
    shutil.copy(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    root = tmp_path / "store"
    first = layerbuild.build(ctx, root=root, tags=[f"{sample.name}:test"], jobs=2)
    assert first.summary.executed > 0
    second = layerbuild.build(ctx, root=root, tags=[f"{sample.name}:test"])
    assert second.summary.hit_rate == 1.0 and second.image.id == first.image.id
    exe = Path(sys.executable).with_name("layerbuild")
    ran = subprocess.run([str(exe), "--root", str(root), "run", "--rm", f"{sample.name}:test"],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == EXPECTED_OUTPUT[sample.name]


def test_every_sample_is_checked() -> None:
    assert {p.name for p in SAMPLES} == set(EXPECTED_OUTPUT)
