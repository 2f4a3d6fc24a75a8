"""Planning with named contexts (`--build-context`): which name they answer to, what they replace."""

from __future__ import annotations

import pytest

from layerbuild.errors import DockerfileError, LayerbuildError
from layerbuild.parser import parse
from layerbuild.plan import BaseImage, FileCopy, LocalContext, Scratch, StageRef, plan_build
from layerbuild.reference import context_name


def resolve(ref: str, platform: str | None) -> BaseImage:
    if ref.startswith("missing"):
        raise LayerbuildError(f"no such image: {ref}")
    return BaseImage(ref, "sha256:" + format(abs(hash(ref)), "064x")[:64])


@pytest.mark.parametrize(("name", "key"), [
    ("alpine", "alpine"), ("alpine:latest", "alpine"), ("docker.io/library/alpine", "alpine"),
    ("alpine:3.19", "alpine:3.19"), ("registry.local:5000/app", "registry.local:5000/app"), ("Build", "build"),
])
def test_names_match_as_buildkit_matches_them(name: str, key: str) -> None:
    assert context_name(name) == key


def test_a_directory_is_read_by_content_and_replaces_the_stage_of_its_name() -> None:
    df = parse("FROM busybox AS lib\nRUN exit 1\nFROM busybox\nCOPY --from=lib /a /a\n"
               "RUN --mount=from=lib,target=/l true\n")
    plan = plan_build(df, resolve_image=resolve, contexts={"lib": None})
    assert [s.index for s in plan.stages] == [1]  # the stage `lib` is not needed: the context is read
    copy, run = plan.stage(1).steps[1:]
    assert copy.sources == (LocalContext("lib"),) and run.sources == (LocalContext("lib"),)
    assert isinstance(copy.op, FileCopy) and copy.op.content_inputs() == {0}


def test_from_a_directory_is_a_copy_of_it_into_an_empty_stage() -> None:
    plan = plan_build(parse("FROM files\nRUN true\n"), resolve_image=resolve, contexts={"files": None})
    stage = plan.stage(0)
    assert isinstance(stage.base, Scratch)
    load, run = stage.steps[1:]
    assert load.text == "[context files] load" and load.sources == (LocalContext("files"),)
    assert load.op == FileCopy(sources=(".",), dest="/", from_input=0)
    assert (load.index, run.index) == (1, 2)


def test_an_image_stands_for_the_name_in_from_and_copy_from() -> None:
    df = parse("FROM alpine:latest AS base\nRUN a\nFROM docker.io/library/alpine\nCOPY --from=alpine /x /x\n")
    plan = plan_build(df, resolve_image=resolve, contexts={"alpine": "mybase:1"})
    (final,) = plan.stages
    assert isinstance(final.base, BaseImage) and final.base.ref == "mybase:1"
    assert final.steps[1].sources == (BaseImage("mybase:1", resolve("mybase:1", None).identity),)
    replaced = plan_build(df, resolve_image=resolve, contexts={"base": "other:2"}, target="base")
    assert isinstance(replaced.stage(0).base, BaseImage) and replaced.stage(0).base.ref == "other:2"
    assert len(replaced.stage(0).steps) == 1  # its RUN is not read


def test_a_stage_name_without_a_context_is_still_the_stage() -> None:
    plan = plan_build(parse("FROM busybox AS lib\nFROM busybox\nCOPY --from=lib /a /a\n"), resolve_image=resolve,
                      contexts={"other": None})
    assert plan.stage(1).steps[1].sources == (StageRef(0),)


def test_a_missing_image_names_the_context_at_its_line() -> None:
    with pytest.raises(DockerfileError) as info:
        plan_build(parse("FROM scratch\nCOPY --from=tools /x /x\n"), resolve_image=resolve,
                   contexts={"tools": "missing:1"})
    assert info.value.line == 2 and "named context tools (docker-image://missing:1)" in info.value.message
