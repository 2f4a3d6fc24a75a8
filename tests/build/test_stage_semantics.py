"""Stage semantics as BuildKit has them: the default PATH, ARGs inherited from a parent stage,
COPY wildcards that match nothing. Real builds on a busybox base."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

import layerbuild
from layerbuild.image.store_io import resolve_image
from layerbuild.platforms import DEFAULT_PATH
from layerbuild.store import Store
from tests.build.kit import busybox, export

pytestmark = pytest.mark.integration


def _env(root: Path, tag: str) -> tuple[str, ...]:
    with Store.open(root) as store:
        return tuple(resolve_image(store, tag).config.config.env)


def test_imported_rootfs_gets_the_default_path(tmp_path: Path, root: Path, ctx: Path) -> None:
    """An imported rootfs has no Env at all. BuildKit's convert.go, when it dispatches a stage:
    "make sure that PATH is always set": a base config without PATH gets
    `PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` appended, before the
    stage's ENV steps expand `$PATH`; the default lands in the image config too."""
    from layerbuild.image import import_rootfs
    from tests.runtime.conftest import busybox_tar

    with Store.open(root) as store:
        import_rootfs(store, io.BytesIO(busybox_tar()), "rootfs:1")
    (ctx / "Dockerfile").write_text(
        "FROM rootfs:1\n"
        "ENV PATH=/opt/tool/bin:$PATH\n"
        'RUN echo "$PATH" > /path.txt\n'  # a shell found through the expanded PATH
    )
    layerbuild.build(ctx, root=root, tags=["out:1"])
    files = export(root, "out:1", tmp_path / "x")
    assert (files / "path.txt").read_text() == f"/opt/tool/bin:{DEFAULT_PATH}\n"
    assert _env(root, "out:1") == (f"PATH=/opt/tool/bin:{DEFAULT_PATH}",)

    # With no ENV at all, the config still gets the default PATH (appended after the base's Env).
    (ctx / "Dockerfile").write_text("FROM rootfs:1\nRUN true\n")
    layerbuild.build(ctx, root=root, tags=["out:2"])
    assert _env(root, "out:2") == (f"PATH={DEFAULT_PATH}",)


def test_scratch_stage_expands_the_default_path(tmp_path: Path, root: Path, ctx: Path) -> None:
    """`FROM scratch` starts with BuildKit's empty image, whose Env is the default PATH
    (convert.go `emptyImage`), so `ENV PATH=/usr/local/bin:$PATH` extends it."""
    shutil.copy(busybox(), ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "ENV PATH=/opt/tool/bin:$PATH\n"
        'RUN ["/bin/busybox", "sh", "-c", "echo \\"$PATH\\" > /path.txt"]\n'
    )
    layerbuild.build(ctx, root=root, tags=["out:1"])
    assert (export(root, "out:1", tmp_path / "x") / "path.txt").read_text() == f"/opt/tool/bin:{DEFAULT_PATH}\n"
    assert _env(root, "out:1") == (f"PATH=/opt/tool/bin:{DEFAULT_PATH}",)
