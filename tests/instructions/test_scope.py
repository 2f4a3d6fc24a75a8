"""The per-step variable scope is read from a shared history: it equals a copy taken at each step."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from layerbuild.instructions.expand import Scope, StageExpander, _ScopeHistory
from tests.instructions.helpers import stages


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("ABC"), st.text("xy", max_size=2), max_size=3),
       st.lists(st.tuples(st.sampled_from("ABCDE"), st.text("xyz", max_size=3)), max_size=12))
def test_the_history_gives_each_steps_copy(start: dict[str, str], assignments: list[tuple[str, str]]) -> None:
    history = _ScopeHistory(start)
    current = dict(start)
    snapshots = [(Scope(history, history.version), tuple(current.items()))]
    for name, value in assignments:
        history.set(name, value)
        current[name] = value
        snapshots.append((Scope(history, history.version), tuple(current.items())))
    for scope, expected in reversed(snapshots):  # read back in any order, long after
        assert scope.items() == expected
        for name in "ABCDE":
            assert scope.get(name, "?") == dict(expected).get(name, "?")


def test_each_step_sees_the_variables_before_it() -> None:
    df, _, parsed = stages("FROM a\nENV A=1\nARG B=2\nENV A=3 C=4\nRUN x\nENV B=5\nRUN y\n")
    expander = StageExpander(df, base_env={"HOME": "/root"})
    steps = list(expander.walk(parsed[0].commands))
    assert [dict(step.variables) for step in steps] == [
        {"HOME": "/root"},
        {"HOME": "/root", "A": "1"},
        {"HOME": "/root", "A": "1", "B": "2"},
        {"HOME": "/root", "A": "3", "B": "2", "C": "4"},
        {"HOME": "/root", "A": "3", "B": "2", "C": "4"},
        {"HOME": "/root", "A": "3", "B": "5", "C": "4"},
    ]
    assert steps[3].variables is steps[4].variables  # no assignment between them: one tuple
    assert [name for name, _ in steps[5].variables] == ["HOME", "A", "B", "C"]  # first-assignment order
