"""Mounts under /dev land in the sandbox's own /dev tmpfs, as runc makes their mount points there."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.runtime import BindMount, ProcessSpec, TmpfsMount, run_step

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("rootfs", ["overlay", "copy"])
def test_mounts_under_dev(lowers: list[Path], scratch: Path, tmp_path: Path, rootfs: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("in dir\n")
    (tmp_path / "file").write_text("a file\n")
    mounts = (BindMount(data, "/dev/pipes"), BindMount(tmp_path / "file", "/dev/deep/er/file"),
              TmpfsMount("/dev/scratch"))
    script = "cat /dev/pipes/f /dev/deep/er/file && echo t > /dev/scratch/t && cat /dev/scratch/t && ls /dev/null"
    result = run_step(lowers, scratch / "upper", scratch / "work",
                      ProcessSpec(argv=("/bin/sh", "-c", script), mounts=mounts), rootfs=rootfs)  # type: ignore[arg-type]
    assert (result.exit_code, result.output_tail.decode()) == (0, "in dir\na file\nt\n/dev/null\n")
    assert not (scratch / "upper" / "dev").exists()


def test_no_mount_point_through_a_dev_symlink(lowers: list[Path], scratch: Path, tmp_path: Path) -> None:
    """/dev/fd is the sandbox's symlink to /proc/self/fd: a mount point is never made through it."""
    (tmp_path / "file").write_text("x\n")
    spec = ProcessSpec(argv=("/bin/true",), mounts=(BindMount(tmp_path / "file", "/dev/fd/9/x"),))
    result = run_step(lowers, scratch / "upper", scratch / "work", spec)
    assert result.exit_code == 125 and "fd is a symlink" in result.output_tail.decode()
