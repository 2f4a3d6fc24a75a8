"""State.applied: a persistent chain of (step, output), oldest first, shared between states."""

from __future__ import annotations

from typing import Any, cast

from layerbuild.solve.solver import NOTHING_APPLIED, Applied, Output, State


def test_chain_keeps_order_and_shares_its_prefix() -> None:
    steps = [cast(Any, f"step{i}") for i in range(5)]
    outs = [Output(diff_id=f"sha256:{i}") for i in range(5)]
    chain = NOTHING_APPLIED
    for step, out in zip(steps, outs, strict=True):
        chain = chain.then(step, out)
    assert list(chain) == list(zip(steps, outs, strict=True))
    assert len(chain) == 5 and len(NOTHING_APPLIED) == 0 and list(NOTHING_APPLIED) == []
    branch_a = chain.then(cast(Any, "a"), Output())
    branch_b = chain.then(cast(Any, "b"), Output())
    assert [s for s, _ in branch_a][-2:] == ["step4", "a"] and [s for s, _ in branch_b][-1] == "b"
    assert list(chain) == list(zip(steps, outs, strict=True))  # adding to it left it as it was


def test_states_compare_by_their_steps() -> None:
    one = NOTHING_APPLIED.then(cast(Any, "s"), Output(diff_id="sha256:1"))
    same = Applied().then(cast(Any, "s"), Output(diff_id="sha256:1"))
    assert one == same and one != NOTHING_APPLIED
    assert State("r", None, one) == State("r", None, same)
    assert State("r", None, one).layers == ("sha256:1",)


def test_a_long_chain_iterates_without_recursion() -> None:
    chain = NOTHING_APPLIED
    for i in range(200_000):
        chain = chain.then(cast(Any, i), Output())
    assert len(chain) == 200_000 and next(iter(chain))[0] == 0
