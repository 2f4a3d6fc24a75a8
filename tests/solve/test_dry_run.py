"""`dry_run`: every step looked up, none run or stored; the answer is what the real solve then does."""

from __future__ import annotations

from layerbuild.solve import SolveOptions, SolveResult
from layerbuild.solve.explain import history_from_json
from tests.solve.toy import DictCache, World, solve

APP = """\
FROM scratch
WORKDIR /app
COPY deps.txt .
RUN install deps
COPY src/ ./src/
RUN build
ENV MODE=prod
RUN test
"""

TWO_STAGES = """\
FROM scratch AS tools
RUN fetch tools
FROM scratch
COPY src/ ./src/
RUN build
COPY --from=tools /t /t
"""

DRY = SolveOptions(dry_run=True)


def history(result: SolveResult):  # type: ignore[no-untyped-def]
    return history_from_json([r.to_json() for r in result.records])


def answers(result: SolveResult) -> list[tuple[str, bool, str | None]]:
    return [(r.instruction, r.cached, r.reason) for r in result.reports]


def world() -> World:
    return World(files={"deps.txt": "a", "src/app.py": "print(1)"})


def effects(w: World) -> list[str]:
    return [t for t in w.runs if t.startswith(("RUN", "COPY", "MakeDir"))]


def test_a_dry_run_of_a_first_build_runs_nothing_stores_nothing_and_names_the_first_miss() -> None:
    w, cache = world(), DictCache()
    dry = solve(APP, w, cache, options=DRY)
    assert effects(w) == [] and cache.records == {}
    got = {r.instruction: (r.cached, r.reason) for r in dry.reports}
    assert got["WORKDIR /app"] == (False, "no earlier build")
    upstream = "runs: upstream step 0:1 `WORKDIR /app` runs"
    assert got["COPY deps.txt ."] == (False, upstream)
    assert got["RUN build"] == (False, upstream)
    assert got["ENV MODE=prod"] == (True, None)  # config only: listed, never runs
    real = solve(APP, w, cache)
    assert [(i, c) for i, c, _ in answers(dry)] == [(i, c) for i, c, _ in answers(real)]


def test_a_dry_run_after_a_source_edit_says_which_file_and_what_runs_after_it() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    w.files["src/app.py"] = "print(2)"
    runs = len(effects(w))
    dry = solve(APP, w, cache, history(first), options=DRY)
    assert len(effects(w)) == runs  # nothing ran
    got = {r.instruction: (r.cached, r.reason) for r in dry.reports}
    assert got["COPY deps.txt ."] == (True, None)
    assert got["RUN install deps"] == (True, None)
    assert got["COPY src/ ./src/"] == (False, "src/app.py changed")
    assert got["RUN build"] == (False, "runs: upstream step 0:4 `COPY src/ ./src/` runs")
    assert got["RUN test"] == (False, "runs: upstream step 0:4 `COPY src/ ./src/` runs")
    real = solve(APP, w, cache, history(first))
    assert [(i, c) for i, c, _ in answers(dry)] == [(i, c) for i, c, _ in answers(real)]
    assert dry.reports[4].reason == real.reports[4].reason  # the miss itself is explained the same way


def test_a_fully_cached_dry_run_hits_everything_with_the_real_keys() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    dry = solve(APP, w, cache, history(first), options=DRY)
    assert all(r.cached for r in dry.reports)
    assert [r.key for r in dry.reports] == [r.key for r in first.reports]


def test_an_independent_stage_is_looked_up_on_its_own() -> None:
    w, cache = world(), DictCache()
    first = solve(TWO_STAGES, w, cache)
    w.files["src/app.py"] = "print(2)"
    dry = solve(TWO_STAGES, w, cache, history(first), options=DRY)
    got = {(r.stage, r.instruction): (r.cached, r.reason) for r in dry.reports}
    assert got[("tools", "RUN fetch tools")] == (True, None)
    assert got[("1", "COPY src/ ./src/")] == (False, "src/app.py changed")
    assert got[("1", "COPY --from=tools /t /t")][1] == "runs: upstream step 1:1 `COPY src/ ./src/` runs"


def test_a_copy_on_top_of_a_miss_also_says_which_of_its_own_sources_changed() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    runs = len(effects(w))
    w.files["deps.txt"] = "b"
    w.files["src/app.py"] = "print(2)"
    dry = solve(APP, w, cache, history(first), options=DRY)
    got = {r.instruction: r.reason for r in dry.reports}
    assert got["COPY deps.txt ."] == "deps.txt changed"
    assert got["COPY src/ ./src/"] == ("runs: upstream step 0:2 `COPY deps.txt .` runs; "
                                       "its own sources: src/app.py changed")
    assert got["RUN build"] == "runs: upstream step 0:2 `COPY deps.txt .` runs"
    w.files["src/app.py"] = "print(1)"  # the copy's sources as they were: only the upstream step is said
    again = {r.instruction: r.reason for r in solve(APP, w, cache, history(first), options=DRY).reports}
    assert again["COPY src/ ./src/"] == "runs: upstream step 0:2 `COPY deps.txt .` runs"
    assert len(effects(w)) == runs  # neither dry run ran anything
