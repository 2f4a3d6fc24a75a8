"""The solver's hit/miss logic on toy ops: hits, misses, invalidation, early cutoff, concurrency."""

from __future__ import annotations

import itertools

import pytest

from layerbuild.errors import BuildError
from layerbuild.solve import BuildEvent, SolveOptions, SolveResult
from layerbuild.solve.explain import history_from_json
from tests.solve.toy import DictCache, World, solve

APP = """\
FROM scratch
ARG VERSION=1
WORKDIR /app
COPY deps.txt .
RUN install deps
COPY src/ ./src/
RUN build --version=$VERSION
ENV MODE=prod
RUN test
CMD ["app"]
"""


def history(result: SolveResult):  # type: ignore[no-untyped-def]
    return history_from_json([r.to_json() for r in result.records])


def by_text(result: SolveResult) -> dict[str, tuple[bool, str | None]]:
    return {r.instruction: (r.cached, r.reason) for r in result.reports}


def world() -> World:
    return World(files={"deps.txt": "a", "src/app.py": "print(1)", "src/lib.py": "x = 1"})


def test_first_build_misses_everything_then_rebuild_hits_everything() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    counted = [r for r in first.reports if r.kind in ("copy", "exec")]
    assert counted and all(not r.cached and r.reason == "no earlier build" for r in counted)
    runs = len(w.runs)
    second = solve(APP, w, cache, history(first))
    assert all(r.cached for r in second.reports)
    assert all(r.reason is None for r in second.reports)
    # Config-only steps run again (they are free); nothing with effects does.
    assert [t for t in w.runs[runs:] if t.startswith(("RUN", "COPY"))] == []


def test_edit_one_file_misses_from_that_copy_on_and_names_the_file() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    w.files["src/app.py"] = "print(2)"
    second = by_text(solve(APP, w, cache, history(first)))
    assert second["COPY deps.txt ."] == (True, None)
    assert second["RUN install deps"] == (True, None)
    assert second["COPY src/ ./src/"] == (False, "src/app.py changed")
    cached, reason = second["RUN build --version=$VERSION"]
    assert not cached and reason is not None
    assert reason.startswith("upstream step changed its output: `COPY src/ ./src/`: src/app.py changed")


def test_added_and_removed_files_are_named() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    del w.files["src/lib.py"]
    w.files["src/new.py"] = "n"
    second = by_text(solve(APP, w, cache, history(first)))
    assert second["COPY src/ ./src/"] == (False, "src/new.py added; src/lib.py removed")


def test_many_changed_files_are_summarised() -> None:
    w = World(files={f"src/f{i}.py": "0" for i in range(10)} | {"deps.txt": "d"})
    cache = DictCache()
    first = solve(APP, w, cache)
    for i in range(10):
        w.files[f"src/f{i}.py"] = "1"
    second = by_text(solve(APP, w, cache, history(first)))
    assert second["COPY src/ ./src/"][1] == "src/f0.py, src/f1.py, src/f2.py and 7 more changed"


def test_early_cutoff_keeps_later_steps_cached() -> None:
    """A re-executed step that produces an identical layer leaves the steps after it cached."""
    w, cache = world(), DictCache()
    w.run_output["RUN build --version=$VERSION"] = "always the same artefact"
    w.run_output["RUN build --version=$VERSION --quiet"] = "always the same artefact"
    first = solve(APP, w, cache)
    edited = APP.replace("RUN build --version=$VERSION", "RUN build --version=$VERSION --quiet")
    second = by_text(solve(edited, w, cache, history(first)))
    assert second["RUN build --version=$VERSION --quiet"][0] is False
    assert second["RUN test"] == (True, None)


def test_a_changed_lower_layer_invalidates_the_chain_above_it() -> None:
    w, cache = world(), DictCache()
    w.run_output["RUN build --version=$VERSION"] = "always the same artefact"
    first = solve(APP, w, cache)
    w.files["src/app.py"] = "print(2)"
    second = by_text(solve(APP, w, cache, history(first)))
    # The RUN made the same layer, but it sits on a different src/ layer: the filesystem differs.
    assert second["RUN test"][0] is False


def test_build_arg_change_misses_from_its_first_use() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache, build_args={"VERSION": "1"})
    second = by_text(solve(APP, w, cache, history(first), build_args={"VERSION": "2"}))
    assert second["COPY src/ ./src/"] == (True, None)
    # RUN sees every ARG in scope, so the first RUN after the ARG uses VERSION.
    assert second["RUN install deps"] == (False, "build-arg VERSION changed ('1' → '2')")


def test_cmd_change_does_not_invalidate_later_steps_but_env_change_does() -> None:
    text = APP.replace('CMD ["app"]', "")
    w, cache = world(), DictCache()
    first = solve(text.replace("ENV MODE=prod", 'LABEL x=1\nENV MODE=prod'), w, cache)
    second = by_text(solve(text.replace("ENV MODE=prod", 'LABEL x=2\nENV MODE=prod'), w, cache, history(first)))
    assert second["RUN test"] == (True, None)
    third = by_text(solve(text.replace("ENV MODE=prod", 'LABEL x=2\nENV MODE=dev'), w, cache))
    assert third["RUN test"][0] is False


def test_instruction_change_is_named() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    second = by_text(solve(APP.replace("RUN test", "RUN test -v"), w, cache, history(first)))
    assert second["RUN test -v"] == (False, "instruction changed (was: RUN test)")


def test_no_cache_and_no_cache_filter() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    again = solve(APP, w, cache, history(first), options=SolveOptions(no_cache=True))
    assert {r.reason for r in again.reports if r.kind in ("copy", "exec")} == {"--no-cache"}
    text = "FROM scratch AS one\nCOPY deps.txt /\nFROM one AS two\nCOPY deps.txt /x\n"
    first = solve(text, w, cache)
    second = solve(text, w, cache, history(first), options=SolveOptions(no_cache_filter=frozenset({"one"})))
    reasons = {(r.stage, r.instruction): r.reason for r in second.reports if r.kind == "copy"}
    # Stage one re-runs; it makes the same layer, so stage two stays cached (early cutoff).
    assert reasons == {("one", "COPY deps.txt /"): "--no-cache-filter one", ("two", "COPY deps.txt /x"): None}


MULTI = """\
FROM scratch AS left
RUN left
FROM scratch AS right
RUN right
FROM scratch
COPY --from=left /a /a
COPY --from=right /b /b
"""


def test_independent_stages_run_concurrently() -> None:
    w, cache = World(sleep=0.3), DictCache()
    solve(MULTI, w, cache, options=SolveOptions(jobs=2))
    spans = {name: (start, end) for name, start, end in w.spans}
    (ls, le), (rs, re_) = spans["RUN left"], spans["RUN right"]
    assert ls < re_ and rs < le, "the two stages' RUN steps should overlap in time"


def test_stages_run_one_at_a_time_with_one_job() -> None:
    w, cache = World(sleep=0.1), DictCache()
    solve(MULTI, w, cache, options=SolveOptions(jobs=1))
    spans = sorted((start, end) for _, start, end in w.spans)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))


def test_stage_output_unchanged_keeps_copy_from_cached() -> None:
    w, cache = World(), DictCache()
    w.run_output["RUN left"] = "same"
    first = solve(MULTI, w, cache)
    second = solve(MULTI.replace("RUN left", "RUN left # edited"), w, cache, history(first))
    w.run_output["RUN left # edited"] = "same"
    third = by_text(solve(MULTI.replace("RUN left", "RUN left # edited"), w, cache, history(second)))
    assert third["COPY --from=left /a /a"] == (True, None)


def test_failure_keeps_earlier_steps_cached_and_raises() -> None:
    w, cache = world(), DictCache()
    w.fail = "RUN test"
    events: list[BuildEvent] = []
    with pytest.raises(BuildError):
        solve(APP, w, cache, events=events.append)
    assert any(e.type == "step.failed" and e.step and e.step.instruction == "RUN test" for e in events)
    w.fail = None
    again = by_text(solve(APP, w, cache))
    assert again["RUN build --version=$VERSION"] == (True, None)
    assert again["RUN test"][0] is False


def test_events_and_order() -> None:
    w, cache = world(), DictCache()
    events: list[BuildEvent] = []
    result = solve(APP, w, cache, events=events.append)
    assert [r.index for r in result.reports] == list(range(len(result.reports)))
    started = [e.step.instruction for e in events if e.type == "step.started" and e.step]
    assert "COPY src/ ./src/" in started
    assert events[-1].type in ("step.finished", "step.cached")


def test_a_chain_of_misses_names_the_root_cause() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    w.files["deps.txt"] = "b"
    second = by_text(solve(APP, w, cache, history(first)))
    root_cause = "upstream step changed its output: `COPY deps.txt .`: deps.txt changed"
    assert second["RUN install deps"] == (False, root_cause)
    assert second["RUN build --version=$VERSION"] == (False, root_cause)
    assert second["RUN test"] == (False, root_cause)


def test_a_history_from_before_op_keys_says_so() -> None:
    w, cache = world(), DictCache()
    first = solve(APP, w, cache)
    old = history_from_json([{**r.to_json(), "op": None, "definition": "old-" + r.definition}
                             for r in first.records])
    second = by_text(solve(APP, w, DictCache(), old))
    cached, reason = second["COPY deps.txt ."]
    assert not cached and reason is not None and "older layerbuild" in reason


class PrefetchingCache(DictCache):
    """A cache that fetches layers lazily: it is told which hits' layers the image will hold."""

    def __init__(self) -> None:
        super().__init__()
        self.prefetched: list[str] = []

    def prefetch(self, diff_ids: list[str]) -> None:
        self.prefetched.extend(diff_ids)


CHAIN = """\
FROM base AS tools
RUN make-tools
FROM base AS runtime
RUN add-runtime
FROM runtime
COPY --from=tools /t /t
COPY app /app
"""


def test_hits_of_the_image_s_own_stages_are_prefetched_and_a_build_stage_s_are_not() -> None:
    w, cache = World(files={"app": "1"}), PrefetchingCache()
    first = solve(CHAIN, w, cache)
    assert cache.prefetched == []  # nothing was a hit
    layer = {r.text: r.layer for r in first.records}
    solve(CHAIN, w, cache)
    # The target and the stage it starts FROM hold the image's layers; the tools stage is only copied from.
    assert sorted(cache.prefetched) == sorted(
        [layer["RUN add-runtime"], layer["COPY --from=tools /t /t"], layer["COPY app /app"]])
    assert layer["RUN make-tools"] not in cache.prefetched
    cache.prefetched.clear()
    solve(CHAIN, w, cache, options=SolveOptions(dry_run=True))
    assert cache.prefetched == []  # a dry run writes no image: nothing to fetch for it
