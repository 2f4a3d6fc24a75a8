"""The planner: bases, target pruning, stage order, ONBUILD triggers, expansion, errors."""

from __future__ import annotations

import pytest

from layerbuild.errors import DockerfileError, UsageError
from layerbuild.parser import parse
from layerbuild.plan import BaseImage, Scratch, StageRef, plan_build


def resolver(images: dict[str, BaseImage] | None = None):  # type: ignore[no-untyped-def]
    def resolve(ref: str, platform: str | None) -> BaseImage:
        if images is not None and ref in images:
            return images[ref]
        return BaseImage(ref, "sha256:" + "2" * 64)

    return resolve


MULTI = """\
ARG BASE=busybox
FROM ${BASE} AS tools
FROM tools AS left
RUN left
FROM scratch AS unused
RUN never
FROM tools AS right
RUN right
FROM scratch
COPY --from=left /a /a
COPY --from=right /b /b
"""


def test_bases_order_and_pruning() -> None:
    plan = plan_build(parse(MULTI), resolve_image=resolver())
    assert [s.label for s in plan.stages] == ["tools", "left", "right", "4"]
    tools, left, right, final = plan.stages
    assert isinstance(tools.base, BaseImage) and tools.base.ref == "busybox"
    assert left.base == StageRef(0) and right.base == StageRef(0)
    assert isinstance(final.base, Scratch)
    assert final.depends_on() == (1, 3)
    assert plan.render() == (
        "stage tools from image busybox\n"
        "stage left from stage tools (after tools)\n"
        "   1 exec RUN left\n"
        "stage right from stage tools (after tools)\n"
        "   1 exec RUN right\n"
        "stage 4 from scratch (after left, right) [target]\n"
        "   1 copy COPY --from=left /a /a\n"
        "   2 copy COPY --from=right /b /b\n"
    )


def test_target_selects_and_prunes() -> None:
    plan = plan_build(parse(MULTI), resolve_image=resolver(), target="LEFT")
    assert [s.label for s in plan.stages] == ["tools", "left"]
    assert plan.target == 1


def test_unknown_target_has_a_hint() -> None:
    with pytest.raises(UsageError) as info:
        plan_build(parse(MULTI), resolve_image=resolver(), target="rigth")
    assert "'rigth'" in info.value.message and info.value.hint == "did you mean 'right'?"


def test_build_args_and_used_args() -> None:
    text = "ARG V=1\nFROM scratch\nARG V\nCOPY a-${V} /x\nLABEL l=$V\nRUN echo\n"
    plan = plan_build(parse(text), resolve_image=resolver(), build_args={"V": "7", "OTHER": "x"})
    steps = plan.stages[0].steps
    copy = steps[2]
    assert copy.command.sources == ("a-7",)  # type: ignore[attr-defined]
    assert copy.args == (("V", "7"),)
    assert steps[4].args == (("V", "7"),)  # RUN sees every ARG in scope
    assert plan.unused_build_args == ("OTHER",)


def test_workdir_user_shell_state() -> None:
    text = 'FROM scratch\nWORKDIR /a\nWORKDIR b\nUSER 10\nSHELL ["/bin/bash", "-c"]\nRUN x\n'
    steps = plan_build(parse(text), resolve_image=resolver()).stages[0].steps
    assert steps[2].workdir == "/a/b"
    assert (steps[5].workdir, steps[5].user, steps[5].shell) == ("/a/b", "10", ("/bin/bash", "-c"))


def test_base_image_env_and_onbuild_triggers() -> None:
    base = BaseImage("app-base", "sha256:" + "3" * 64, env=(("HOME", "/root"),),
                     onbuild=("COPY . /src", "RUN make"), workdir="/w")
    text = "FROM app-base\nCOPY $HOME/x /y\n"
    stage = plan_build(parse(text), resolve_image=resolver({"app-base": base})).stages[0]
    assert [s.text for s in stage.steps] == ["FROM app-base", "COPY . /src", "RUN make", "COPY $HOME/x /y"]
    assert [s.trigger for s in stage.steps[1:]] == [True, True, False]
    assert stage.steps[3].command.sources == ("/root/x",)  # type: ignore[attr-defined]
    assert stage.steps[1].workdir == "/w"


def test_onbuild_of_a_stage_runs_in_its_children() -> None:
    text = "FROM scratch AS a\nONBUILD RUN hook\nFROM a\nRUN after\n"
    stage = plan_build(parse(text), resolve_image=resolver()).stages[-1]
    assert [s.text for s in stage.steps[1:]] == ["RUN hook", "RUN after"]


def test_circular_stages_are_an_error() -> None:
    text = "FROM scratch AS a\nCOPY --from=b /x /x\nFROM scratch AS b\nCOPY --from=a /y /y\n"
    with pytest.raises(DockerfileError, match="circular"):
        plan_build(parse(text), resolve_image=resolver())


def test_copy_from_image_resolves_it() -> None:
    seen: list[str] = []

    def resolve(ref: str, platform: str | None) -> BaseImage:
        seen.append(ref)
        return BaseImage(ref, "sha256:" + "4" * 64)

    plan = plan_build(parse("FROM scratch\nCOPY --from=tools:1 /t /t\n"), resolve_image=resolve)
    assert seen == ["tools:1"]
    assert isinstance(plan.stages[0].steps[1].sources[0], BaseImage)


def test_a_base_without_path_gets_the_default_path() -> None:
    """BuildKit appends its default PATH to a stage's base env when it has none (convert.go,
    dispatchStages: "make sure that PATH is always set"); `$PATH` then expands to it."""
    from layerbuild.platforms import DEFAULT_PATH

    rootfs = BaseImage("rootfs", "sha256:" + "5" * 64, env=(("LANG", "C"),))
    for base in ("scratch", "rootfs"):
        text = f"FROM {base}\nENV PATH=/opt/bin:$PATH\nRUN x\n"
        steps = plan_build(parse(text), resolve_image=resolver({"rootfs": rootfs})).stages[0].steps
        assert steps[1].command.pairs[0].value == f"/opt/bin:{DEFAULT_PATH}"  # type: ignore[attr-defined]
        assert dict(steps[2].op.env)["PATH"] == f"/opt/bin:{DEFAULT_PATH}"  # type: ignore[union-attr]
    kept = BaseImage("kept", "sha256:" + "6" * 64, env=(("PATH", "/only"),))
    steps = plan_build(parse("FROM kept\nRUN x\n"), resolve_image=resolver({"kept": kept})).stages[0].steps
    assert dict(steps[1].op.env)["PATH"] == "/only"  # type: ignore[union-attr]


def test_child_stage_sees_the_parent_stage_args() -> None:
    """convert.go `dispatchState.init`: a stage FROM another starts from its state and its
    buildArgs, so the parent's ARG values are in scope, in RUN's env and in the step's args."""
    text = "FROM scratch AS a\nARG V=one\nARG W\nENV E=e\nFROM a\nCOPY $V /x\nRUN x\n"
    steps = plan_build(parse(text), resolve_image=resolver(), build_args={"W": "w"}).stages[-1].steps
    assert steps[1].command.sources == ("one",)  # type: ignore[attr-defined]
    assert steps[1].args == (("V", "one"),)
    env = dict(steps[2].op.env)  # type: ignore[union-attr]
    assert (env["V"], env["W"], env["E"]) == ("one", "w", "e")
    assert steps[2].args == (("V", "one"), ("W", "w"))
