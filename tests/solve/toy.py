"""Toy ops for solver tests: a fake 'context' of files, RUN outputs chosen by the test, run counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from layerbuild.digest import xxh3
from layerbuild.errors import BuildError
from layerbuild.parser import parse
from layerbuild.plan import BaseImage, BuildPlan, Exec, FileCopy, OpDef, plan_build
from layerbuild.solve import Content, Inputs, Output, SolveOptions, Solver, SolveResult
from layerbuild.solve.explain import History


class DictCache:
    def __init__(self) -> None:
        self.records: dict[str, Output] = {}

    def get(self, key: str) -> Output | None:
        return self.records.get(key)

    def put(self, key: str, kind: str, output: Output) -> None:
        self.records[key] = output


@dataclass
class World:
    """What the toy ops see: context files, per-RUN outputs, and a log of what ran when."""

    files: dict[str, str] = field(default_factory=dict)
    run_output: dict[str, str] = field(default_factory=dict)  # RUN text -> fixed output (early cutoff)
    sleep: float = 0.0
    fail: str | None = None
    runs: list[str] = field(default_factory=list)
    spans: list[tuple[str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def op_text(op: OpDef) -> str:
    """How the toys name an op in `World.runs` and `World.run_output`: RUN/COPY/WORKDIR-like text."""
    if isinstance(op, Exec):
        return "RUN " + " ".join(op.args)
    if isinstance(op, FileCopy):
        return "COPY " + " ".join((*op.sources, op.dest))
    return type(op).__name__


class ToyTask:
    def __init__(self, world: World, op: OpDef, inputs: Inputs) -> None:
        self.world = world
        self.op = op
        self.inputs = inputs
        self.text = op_text(op)

    def content(self) -> Content | None:
        if not isinstance(self.op, FileCopy) or self.op.from_input is not None:
            return None
        selected = {p: xxh3(v.encode()) for p, v in self.world.files.items()
                    if any(p.startswith(s.rstrip("/")) for s in self.op.sources)}
        return Content(xxh3("|".join(f"{k}={v}" for k, v in sorted(selected.items())).encode()), selected)

    def run(self, previous: Output | None) -> Output:
        start = time.monotonic()
        if self.world.sleep:
            time.sleep(self.world.sleep)
        with self.world.lock:
            self.world.runs.append(self.text)
        if self.world.fail and self.world.fail in self.text:
            raise BuildError(f"toy failure in {self.text}")
        if not self.op.cacheable:
            return Output()
        fixed = self.world.run_output.get(self.text)
        payload = fixed if fixed is not None else "|".join(
            [self.inputs.parent.result, self.text, *(d.result for d in self.inputs.deps),
             repr(sorted(self.world.files.items()))]
        )
        with self.world.lock:
            self.world.spans.append((self.text, start, time.monotonic()))
        return Output(diff_id="sha256:" + xxh3(payload.encode()).ljust(64, "0"), size=1)

    def close(self) -> None:
        pass


class ToyExecutor:
    """Runs every op as a toy: outputs are a hash of what the op and its inputs are (or fixed)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def prepare(self, op: OpDef, inputs: Inputs) -> ToyTask:
        return ToyTask(self.world, op, inputs)

    def usable(self, output: Output) -> bool:
        return True


def make_plan(text: str, build_args: Mapping[str, str] | None = None, target: str | None = None) -> BuildPlan:
    return plan_build(parse(text), resolve_image=lambda ref, plat: BaseImage(ref, "sha256:" + "1" * 64),
                      build_args=build_args, target=target)


def solve(
    text: str,
    world: World,
    cache: DictCache,
    previous: History | None = None,
    *,
    options: SolveOptions | None = None,
    build_args: Mapping[str, str] | None = None,
    events: Callable[..., None] | None = None,
) -> SolveResult:
    plan = make_plan(text, build_args)
    return Solver(plan, ToyExecutor(world), cache, options=options, previous=previous,
                  on_event=events).solve()
