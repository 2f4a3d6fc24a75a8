"""The plan's values: stages, their base, and the expanded steps a build will solve, in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from layerbuild.instructions import commands as c
from layerbuild.plan.ops import ConfigEdit, OpDef

StepKind = Literal["base", "copy", "exec", "meta"]


@dataclass(frozen=True)
class BaseImage:
    """What the planner needs to know of a base image: its identity, env and ONBUILD triggers."""

    ref: str
    identity: str
    env: tuple[tuple[str, str], ...] = ()
    onbuild: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""
    shell: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scratch:
    """`FROM scratch`: no layers, an empty config."""


@dataclass(frozen=True)
class StageRef:
    """A reference to an earlier stage of the same Dockerfile (by its position)."""

    index: int


@dataclass(frozen=True)
class LocalContext:
    """A named build context that is a local directory (`--build-context NAME=DIR`): read like the
    main context (its own `.dockerignore`, owners as 0:0), keyed by the content a step selects."""

    name: str


Base = Scratch | BaseImage | StageRef | LocalContext


@dataclass(frozen=True)
class Step:
    """One instruction of a stage after expansion, ready to be keyed and run.

    `text` is the instruction as written (continuations joined), for reports and explanations;
    `args` holds the build args the step depends on with their values (what a RUN sees is its op's).
    `sources` names other stages or images that COPY --from / RUN --mount from= read.
    `history_args` feed the history text (see the field).
    `workdir`, `user` and `shell` are the state in force when the step runs (for WORKDIR itself,
    `workdir` is the directory it makes current). `op` is what the step does as data (plan.ops):
    the solver keys and runs the op, never the instruction; `command` is kept for the image config.
    """

    stage: int
    index: int
    kind: StepKind
    text: str
    command: c.Command = field(repr=False)
    args: tuple[tuple[str, str], ...] = ()
    sources: tuple[Base, ...] = ()
    trigger: bool = False
    workdir: str = "/"
    user: str = ""
    shell: tuple[str, ...] = ("/bin/sh", "-c")
    op: OpDef = field(default=ConfigEdit(""))
    # For the history text only, never a key: for RUN, the stage's ARGs in declaration order with the
    # values the step sees (BuildKit's `|N KEY=value`); for ARG, its arguments with the values they took.
    history_args: tuple[tuple[str, str | None], ...] = ()

    @property
    def line(self) -> int:
        return self.command.node.start_line


@dataclass(frozen=True)
class PlannedStage:
    """A stage: its base, its steps (the FROM first), and the stages it reads from."""

    index: int
    name: str | None
    base: Base
    steps: tuple[Step, ...]
    platform: str | None = None

    @property
    def label(self) -> str:
        """How reports name the stage: its name, else its position."""
        return self.name if self.name is not None else str(self.index)

    def depends_on(self) -> tuple[int, ...]:
        deps: set[int] = set()
        if isinstance(self.base, StageRef):
            deps.add(self.base.index)
        for step in self.steps:
            deps.update(s.index for s in step.sources if isinstance(s, StageRef))
        return tuple(sorted(deps))


@dataclass(frozen=True)
class BuildPlan:
    """The stages needed for the target, each after all the stages it depends on."""

    stages: tuple[PlannedStage, ...]
    target: int
    build_args: tuple[tuple[str, str], ...] = ()
    unused_build_args: tuple[str, ...] = ()
    filename: str = "Dockerfile"

    def stage(self, index: int) -> PlannedStage:
        for stage in self.stages:
            if stage.index == index:
                return stage
        raise KeyError(index)

    def render(self) -> str:
        """A stable text form of the plan, for tests and `--progress plain`."""
        lines = []
        for stage in self.stages:
            base = stage.base
            if isinstance(base, Scratch):
                what = "scratch"
            elif isinstance(base, LocalContext):
                what = f"context {base.name}"
            elif isinstance(base, BaseImage):
                what = f"image {base.ref}"
            else:
                what = f"stage {self.stage(base.index).label}"
            deps = stage.depends_on()
            dep_text = f" (after {', '.join(self.stage(d).label for d in deps)})" if deps else ""
            marker = " [target]" if stage.index == self.target else ""
            lines.append(f"stage {stage.label} from {what}{dep_text}{marker}")
            for step in stage.steps[1:]:
                args = "".join(f" {k}={v}" for k, v in step.args)
                extra = f"  args:{args}" if args else ""
                lines.append(f"  {step.index:>2} {step.kind:<4} {step.text}{extra}")
        return "\n".join(lines) + "\n"
