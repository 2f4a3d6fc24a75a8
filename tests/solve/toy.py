"""Toy ops for solver tests: a fake 'context' of files, RUN outputs chosen by the test, run counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from layerbuild.digest import xxh3
from layerbuild.errors import BuildError
from layerbuild.instructions import commands as c
from layerbuild.parser import parse
from layerbuild.plan import BaseImage, BuildPlan, Step, plan_build
from layerbuild.solve import Content, Output, SolveOptions, Solver, SolveResult, State
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


class ToyOp:
    def __init__(self, world: World, step: Step) -> None:
        self.world = world
        self.step = step
        self.cacheable = step.kind in ("copy", "exec") or isinstance(step.command, c.Workdir)

    def content(self, parent: State, deps: Sequence[State]) -> Content | None:
        if not isinstance(self.step.command, c.Copy) or self.step.command.from_stage:
            return None
        selected = {p: xxh3(v.encode()) for p, v in self.world.files.items()
                    if any(p.startswith(s.rstrip("/")) for s in self.step.command.sources)}
        return Content(xxh3("|".join(f"{k}={v}" for k, v in sorted(selected.items())).encode()), selected)

    def run(self, parent: State, deps: Sequence[State]) -> Output:
        start = time.monotonic()
        if self.world.sleep:
            time.sleep(self.world.sleep)
        with self.world.lock:
            self.world.runs.append(self.step.text)
        if self.world.fail and self.world.fail in self.step.text:
            raise BuildError(f"toy failure in {self.step.text}")
        if not self.cacheable:
            return Output()
        fixed = self.world.run_output.get(self.step.text)
        payload = fixed if fixed is not None else "|".join(
            [parent.result, self.step.text, *(d.result for d in deps), repr(sorted(self.world.files.items()))]
        )
        with self.world.lock:
            self.world.spans.append((self.step.text, start, time.monotonic()))
        return Output(diff_id="sha256:" + xxh3(payload.encode()).ljust(64, "0"), size=1)

    def usable(self, output: Output) -> bool:
        return True

    def close(self) -> None:
        pass


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
    return Solver(plan, lambda step: ToyOp(world, step), cache, options=options, previous=previous,
                  on_event=events).solve()
