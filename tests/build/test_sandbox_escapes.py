"""The device and nested-namespace escapes reproduced in RUN steps of real builds: each must fail."""

from __future__ import annotations

from pathlib import Path

import pytest

import layerbuild
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration


def failing_step(bb_ctx: Path, root: Path, dockerfile: str) -> str:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + dockerfile})
    with pytest.raises(layerbuild.BuildError) as info:
        layerbuild.build(bb_ctx, root=root)
    return info.value.render()


def test_root_cannot_read_a_device_node_it_makes(bb_ctx: Path, root: Path) -> None:
    # /dev/zero's numbers: without nodev this reads (the 10:183 read the host's RNG the same way).
    # (Without a device cgroup CAP_MKNOD is dropped, and mknod itself is refused.)
    text = failing_step(bb_ctx, root, "RUN mknod /z c 1 5 && head -c 4 /z > /out\n")
    assert "Permission denied" in text or "Operation not permitted" in text, text
    text = failing_step(bb_ctx, root, "RUN mknod /dev/b b 7 0 && head -c 4 /dev/b > /out\n")
    assert "Permission denied" in text or "Operation not permitted" in text, text


def test_a_0666_node_of_an_earlier_step_does_not_open_for_a_user(bb_ctx: Path, root: Path) -> None:
    text = failing_step(bb_ctx, root, "RUN mknod -m 666 /zero c 1 5\nUSER 1000\nRUN head -c 4 /zero > /dev/null\n")
    made = "Dockerfile:4" not in text
    assert ("Dockerfile:6" in text and "Permission denied" in text) or (not made and "not permitted" in text), text


def test_nested_user_namespace_and_mount_fail(bb_ctx: Path, root: Path) -> None:
    text = failing_step(bb_ctx, root, "RUN unshare -U -r -m mount -t tmpfs t /bin\n")
    assert "Operation not permitted" in text, text


def test_kernel_knobs_are_read_only(bb_ctx: Path, root: Path) -> None:
    text = failing_step(bb_ctx, root, "RUN echo x > /proc/sys/kernel/domainname\n")
    assert "Read-only file system" in text, text
