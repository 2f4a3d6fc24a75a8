"""Which steps may be keyed by their sources' results alone: those that read nothing of the build
context (a RUN binding the context as well as another stage reads both, and must be keyed by both)."""

from __future__ import annotations

from layerbuild.plan.ops import BindMountDef, Exec, FileCopy


def test_only_steps_that_read_their_inputs_alone_qualify() -> None:
    assert FileCopy(sources=("/a",), dest="/a", from_input=0).reads_only_inputs()
    assert not FileCopy(sources=("a",), dest="/a").reads_only_inputs()  # the build context
    run = Exec(shell=(), args=("true",), env=())
    assert not run.reads_only_inputs()  # nothing from an input at all
    from_stage = BindMountDef(target="/o", source="/out", from_input=0)
    assert Exec(shell=(), args=("true",), env=(), mounts=(from_stage,)).reads_only_inputs()
    both = (from_stage, BindMountDef(target="/m.txt", source="m.txt"))
    assert not Exec(shell=(), args=("true",), env=(), mounts=both).reads_only_inputs()
