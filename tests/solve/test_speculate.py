"""Steps run ahead on a guess while the step before them runs (Executor.speculate), on toy ops: the
guess sees the parent of the running step, its output reaches the real run only as `previous`, it is
never cached or reported, a hit cancels it and a failed guess changes nothing."""

from __future__ import annotations

from layerbuild.errors import BuildError
from layerbuild.plan import FileCopy, OpDef
from layerbuild.solve import Inputs, Output, Solver
from tests.solve.toy import DictCache, ToyExecutor, ToyTask, World, make_plan

DOCKERFILE = """\
FROM scratch
WORKDIR /app
COPY deps.txt .
RUN install deps
ENV MODE=prod
COPY src/ ./src/
RUN build
"""


class GuessTask(ToyTask):
    def __init__(self, world: World, op: OpDef, inputs: Inputs, log: list[tuple[str, object]], fail: bool) -> None:
        super().__init__(world, op, inputs)
        self.log = log
        self.fail = fail

    def run(self, previous: Output | None) -> Output:
        self.log.append(("guess", self.text, self.inputs.parent.result))
        if self.fail:
            raise BuildError("the guess failed")
        out = super().run(previous)
        return Output(diff_id=out.diff_id, size=out.size, extra={"guess": self.text})

    def cancel(self) -> None:
        self.log.append(("cancel", self.text, None))


class SeenTask(ToyTask):
    def __init__(self, world: World, op: OpDef, inputs: Inputs, log: list[tuple[str, object]]) -> None:
        super().__init__(world, op, inputs)
        self.log = log

    def run(self, previous: Output | None) -> Output:
        self.log.append(("run", self.text, previous.extra.get("guess") if previous is not None else None))
        return super().run(previous)


class Speculating(ToyExecutor):
    def __init__(self, world: World, *, fail: bool = False) -> None:
        super().__init__(world)
        self.log: list[tuple[str, object]] = []
        self.fail = fail

    def prepare(self, op: OpDef, inputs: Inputs) -> ToyTask:
        return SeenTask(self.world, op, inputs, self.log)

    def speculate(self, op: OpDef, inputs: Inputs) -> ToyTask | None:
        return GuessTask(self.world, op, inputs, self.log, self.fail) if isinstance(op, FileCopy) else None


def files() -> dict[str, str]:
    return {"deps.txt": "a", "src/app.py": "print(1)"}


def solve(executor: ToyExecutor, cache: DictCache):  # type: ignore[no-untyped-def]
    return Solver(make_plan(DOCKERFILE), executor, cache).solve()


def test_the_copy_after_a_run_is_guessed_on_the_run_s_parent_and_the_real_run_gets_the_guess() -> None:
    spec = Speculating(World(files=files()))
    cache = DictCache()
    result = solve(spec, cache)
    plain = solve(ToyExecutor(World(files=files())), DictCache())
    assert [r.layer for r in result.reports] == [r.layer for r in plain.reports]  # the same build
    records = {r.text: r for r in result.records}
    guesses = [e for e in spec.log if e[0] == "guess"]
    # Only the COPY that follows a RUN (past the ENV) is guessed, on the state the RUN starts from.
    assert guesses == [("guess", "COPY src/ ./src/", records["COPY deps.txt ."].result)]
    assert ("run", "COPY src/ ./src/", "COPY src/ ./src/") in spec.log  # its output as `previous`
    assert ("run", "COPY deps.txt .", None) in spec.log
    assert all(not out.extra.get("guess") for out in cache.records.values())  # never cached


def test_a_copy_that_hits_after_a_run_cancels_its_guess() -> None:
    world = World(files=files(), run_output={"RUN install deps": "same"})
    cache = DictCache()
    first = solve(ToyExecutor(world), cache)
    run_key = next(r.key for r in first.reports if r.instruction == "RUN install deps")
    del cache.records[run_key]  # the RUN runs again and makes the same layer: the COPY hits
    spec = Speculating(world)
    result = solve(spec, cache)
    assert not next(r for r in result.reports if r.instruction == "RUN install deps").cached
    assert next(r for r in result.reports if r.instruction == "COPY src/ ./src/").cached
    assert ("cancel", "COPY src/ ./src/", None) in spec.log
    assert not any(e[0] == "run" and e[1] == "COPY src/ ./src/" for e in spec.log)


def test_a_failed_guess_changes_nothing() -> None:
    spec = Speculating(World(files=files()), fail=True)
    result = solve(spec, DictCache())
    plain = solve(ToyExecutor(World(files=files())), DictCache())
    assert [r.layer for r in result.reports] == [r.layer for r in plain.reports]
    assert ("run", "COPY src/ ./src/", None) in spec.log  # no guess to build on


def test_a_dry_run_guesses_nothing() -> None:
    from layerbuild.solve import SolveOptions

    spec = Speculating(World(files=files()))
    Solver(make_plan(DOCKERFILE), spec, DictCache(), options=SolveOptions(dry_run=True)).solve()
    assert not any(e[0] == "guess" for e in spec.log)
