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
from tests.build.kit import busybox, export, make_base

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


CHILD_OF_STAGE = """\
FROM base:1 AS a
ARG V=one
ARG W
ENV E=env
FROM a AS b
ENV FROM_ARG=$V
RUN echo "V=$V E=$E" > /out/seen && env | grep -E '^(V|W)=' > /out/env
"""


def test_child_stage_inherits_the_parent_stage_args(tmp_path: Path, root: Path, ctx: Path) -> None:
    """`FROM a AS b` starts from stage a's state, build ARGs included: convert.go's
    `dispatchState.init` sets `ds.state = ds.base.state` (where dispatchArg put each ARG value
    with `d.state.AddEnv`) and `ds.buildArgs = append(ds.buildArgs, ds.base.buildArgs...)`.
    So b's words expand them and its RUN steps have them in their environment; an ARG without a
    value is not there; and they do not go to the image config (only ENV writes it)."""
    make_base(tmp_path / "base", root)
    (ctx / "Dockerfile").write_text(CHILD_OF_STAGE)
    layerbuild.build(ctx, root=root, tags=["b:1"])
    files = export(root, "b:1", tmp_path / "x")
    assert (files / "out/seen").read_text() == "V=one E=env\n"
    assert (files / "out/env").read_text() == "V=one\n"
    env = dict(e.split("=", 1) for e in _env(root, "b:1"))
    assert env["FROM_ARG"] == "one" and env["E"] == "env"
    assert "V" not in env and "W" not in env

    # The inherited value is part of the child's steps: a new --build-arg value reruns them.
    layerbuild.build(ctx, root=root, tags=["b:2"], build_args={"V": "two"})
    files = export(root, "b:2", tmp_path / "y")
    assert (files / "out/seen").read_text() == "V=two E=env\n"
    assert dict(e.split("=", 1) for e in _env(root, "b:2"))["FROM_ARG"] == "two"


def test_copy_wildcard_matching_nothing_copies_nothing(tmp_path: Path, root: Path, ctx: Path) -> None:
    """BuildKit's dispatchCopy (convert_copy.go) gives every context source `AllowWildcard` and
    `AllowEmptyWildcard`; its file backend (`docopy`) returns before touching the destination
    when a pattern resolves to no file. So COPY/ADD succeed when patterns match nothing, even all
    of them, without creating the destination; a plain path that is missing is still an error."""
    make_base(tmp_path / "base", root)
    (ctx / "a.txt").write_text("A\n")
    (ctx / "Dockerfile").write_text(
        "FROM base:1\n"
        "COPY *.nothing /none/\n"
        "ADD missing-[0-9].tar /none-add/\n"
        "COPY *.nothing a.txt /some/\n"
        "RUN test ! -e /none && test ! -e /none-add && echo ok > /out/ok\n"
    )
    layerbuild.build(ctx, root=root, tags=["w:1"])
    files = export(root, "w:1", tmp_path / "x")
    assert (files / "some/a.txt").read_text() == "A\n"
    assert (files / "out/ok").read_text() == "ok\n"
    assert not (files / "none").exists() and not (files / "none-add").exists()

    (ctx / "Dockerfile").write_text("FROM base:1\nCOPY *.nothing missing.txt /d/\n")
    with pytest.raises(layerbuild.BuildError, match=r"'missing\.txt': not found in the build context"):
        layerbuild.build(ctx, root=root, tags=["w:2"])
