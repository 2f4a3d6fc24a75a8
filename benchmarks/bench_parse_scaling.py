"""Parser scaling: time and peak memory at 1, 2 and 4 MB of one growing part, and at 1e5, 2e5 and
4e5 instructions, through parse, typed instructions and planning (what `build` does before it
runs anything). Linear code takes about twice as long, and twice the memory, for twice the input.

Run: .venv/bin/python -m pytest benchmarks/bench_parse_scaling.py --benchmark-only
Each benchmark stores `input_bytes`, `peak_mib` (tracemalloc's peak of a separate, untimed run)
and `mib_per_s` in its extra_info. `benchmarks/scaling_inputs.py` makes the inputs.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from benchmarks.scaling_inputs import GENERATORS
from layerbuild.errors import LayerbuildError
from layerbuild.parser import core, parse
from layerbuild.plan import plan_build

MB = 1_000_000
SIZES = {
    "label_value": (1 * MB, 2 * MB, 4 * MB),
    "env_expansion": (1 * MB, 2 * MB, 4 * MB),
    "env_trim": (1 * MB, 2 * MB, 4 * MB),
    "run_words": (1 * MB, 2 * MB, 4 * MB),
    "heredoc_body": (1 * MB, 2 * MB, 4 * MB),
    "comments": (1 * MB, 2 * MB, 4 * MB),
    "directive_line": (16_000, 32_000, 64_000),
    "instructions": (100_000, 200_000, 400_000),
    "env_names": (25_000, 50_000, 100_000),
}
CASES = [(kind, size) for kind, sizes in SIZES.items() for size in sizes]


def _no_images(ref: str, platform: str | None) -> Any:
    raise LayerbuildError(f"no image {ref}")  # every input builds FROM scratch


def parse_and_plan(data: bytes) -> int:
    df = parse(data)
    plan = plan_build(df, resolve_image=_no_images)
    return sum(len(stage.steps) for stage in plan.stages)


def _peak_mib(data: bytes) -> float:
    tracemalloc.start()
    try:
        parse_and_plan(data)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("kind", "size"), CASES, ids=[f"{k}-{s:g}" for k, s in CASES])
def test_parse_and_plan_scaling(benchmark: Any, kind: str, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2e5 and 4e5 instructions are past the parser's limit (1e5); it is raised here to see the slope.
    monkeypatch.setattr(core, "MAX_INSTRUCTIONS", 10 * size)
    data = GENERATORS[kind](size)
    steps = benchmark.pedantic(parse_and_plan, args=(data,), rounds=1, iterations=1, warmup_rounds=0)
    assert steps >= 2
    benchmark.extra_info["input_bytes"] = len(data)
    benchmark.extra_info["peak_mib"] = round(_peak_mib(data), 1)
    if benchmark.stats is not None:
        benchmark.extra_info["mib_per_s"] = round(len(data) / 2**20 / benchmark.stats.stats.mean, 2)


BUILD_SIZES = (5_000, 10_000, 20_000)


@pytest.mark.parametrize("count", BUILD_SIZES, ids=[f"env_names-{n}" for n in BUILD_SIZES])
def test_build_of_many_config_steps_scaling(benchmark: Any, count: int, tmp_path: Any) -> None:
    """A whole build (FROM scratch, `count` ENVs of distinct names): the image config is assembled
    once at the end, so doubling the steps about doubles the time."""
    import layerbuild

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    # FROM scratch has no shell: the generator's closing RUN is left out.
    (ctx / "Dockerfile").write_bytes(GENERATORS["env_names"](count).replace(b"RUN env\n", b""))
    runs = iter(range(1_000))

    def build() -> None:
        layerbuild.build(ctx, root=tmp_path / f"store-{next(runs)}", no_cache=True)

    benchmark.pedantic(build, rounds=3, iterations=1)
    benchmark.extra_info["steps"] = count
