"""RUN bind mounts of the build context in the real sandbox: keyed by what they show, showing only what
.dockerignore lets through, and never writable in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import layerbuild
from layerbuild.image.export import export_local
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration

BASE = BUSYBOX_BASE



def files_of(root: Path, ref: str, dest: Path) -> Path:
    with Store.open(root) as store:
        export_local(store, resolve_image(store, ref), dest)
    return dest


def exec_step(result: layerbuild.BuildResult, text: str) -> tuple[bool, str | None]:
    step = next(s for s in result.steps if text in s.instruction)
    return step.cached, step.reason


def test_ignored_files_are_not_shown_and_writes_stay_out_of_the_context(
        bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    write(bb_ctx, {
        "Dockerfile": BASE + "RUN --mount=type=bind,source=src,target=/src,rw "
                             "ls -a /src > /listing && echo scribble > /src/new.txt && rm /src/keep.txt\n",
        ".dockerignore": "src/secret.env\n",
        "src/keep.txt": "keep\n", "src/secret.env": "TOKEN=1\n",
    })  # fmt: skip
    layerbuild.build(bb_ctx, root=root, tags=["b:1"])
    listing = (files_of(root, "b:1", tmp_path / "fs") / "listing").read_text().split()
    assert "keep.txt" in listing and "secret.env" not in listing
    # The RUN wrote to and deleted from its view; the context is as it was.
    assert sorted(os.listdir(bb_ctx / "src")) == ["keep.txt", "secret.env"]
    assert (bb_ctx / "src" / "keep.txt").read_text() == "keep\n"


def test_editing_an_ignored_file_under_a_bind_source_reruns_nothing(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {
        "Dockerfile": BASE + "RUN --mount=type=bind,source=src,target=/src cat /src/a > /a\n",
        ".dockerignore": "src/*.log\n", "src/a": "a\n", "src/x.log": "1\n",
    })  # fmt: skip
    layerbuild.build(bb_ctx, root=root)
    (bb_ctx / "src" / "x.log").write_text("2\n")
    assert exec_step(layerbuild.build(bb_ctx, root=root), "cat /src/a") == (True, None)
    (bb_ctx / "src" / "a").write_text("b\n")
    assert exec_step(layerbuild.build(bb_ctx, root=root), "cat /src/a") == (False, "bind mount src/a changed")


def test_the_owner_of_a_bind_source_is_keyed_because_the_run_sees_it(bb_ctx: Path, root: Path,
                                                                      tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    write(bb_ctx, {"Dockerfile": BASE + "RUN --mount=type=bind,source=m.txt,target=/m.txt "
                                        "stat -c %u /m.txt > /owner\n", "m.txt": "m\n"})
    layerbuild.build(bb_ctx, root=root, tags=["o:1"])
    os.chown(bb_ctx / "m.txt", 1234, 1234)
    again = layerbuild.build(bb_ctx, root=root, tags=["o:1"])
    assert exec_step(again, "stat -c") == (False, "bind mount m.txt changed")
    assert (files_of(root, "o:1", tmp_path / "fs") / "owner").read_text() == "1234\n"


def test_a_missing_bind_source_is_a_located_error(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BASE + "RUN --mount=type=bind,source=nope,target=/n true\n"})
    with pytest.raises(layerbuild.BuildError) as info:
        layerbuild.build(bb_ctx, root=root)
    assert "Dockerfile:4" in info.value.render() and "nope" in info.value.message


def test_a_bind_from_another_stage_reruns_only_when_what_it_shows_changed(
        bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    dockerfile = BASE + """\
FROM base AS other
ARG X=1
ARG Y=1
RUN mkdir /out && echo x-$X > /out/x && echo y-$Y > /y
FROM base
RUN --mount=type=bind,from=other,source=/out,target=/o,rw cat /o/x > /seen && echo scribble > /o/x
RUN --mount=type=bind,from=other,source=/out,target=/o cat /o/x > /seen-again
"""
    write(bb_ctx, {"Dockerfile": dockerfile})
    layerbuild.build(bb_ctx, root=root, tags=["s:1"])
    # /y changes, /out does not: the binds of /out stay cached.
    again = layerbuild.build(bb_ctx, root=root, tags=["s:1"], build_args={"Y": "2"})
    assert exec_step(again, "mkdir /out")[0] is False
    assert exec_step(again, "cat /o/x > /seen &&") == (True, None)
    changed = layerbuild.build(bb_ctx, root=root, tags=["s:1"], build_args={"X": "2"})
    assert exec_step(changed, "cat /o/x > /seen &&") == (False, "bind mount /o: out/x changed")
    fs = files_of(root, "s:1", tmp_path / "fs")
    # The rw bind wrote to a copy: the second RUN still sees the stage's own file.
    assert (fs / "seen").read_text() == "x-2\n" and (fs / "seen-again").read_text() == "x-2\n"
