"""Interpolation: every form of the Compose Specification, nested defaults, `$$`, and bad templates."""

from __future__ import annotations

import pytest

from layerbuild.compose.dotenv import parse_env
from layerbuild.compose.interpolate import InterpolationError, interpolate

ENV = {"SET": "value", "EMPTY": "", "PORT": "8080"}


@pytest.mark.parametrize(("template", "expected"), [
    ("$SET", "value"), ("${SET}", "value"), ("a${SET}b", "avalueb"), ("$SET.x", "value.x"),
    ("${UNSET:-d}", "d"), ("${EMPTY:-d}", "d"), ("${SET:-d}", "value"),
    ("${UNSET-d}", "d"), ("${EMPTY-d}", ""),
    ("${SET:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"), ("${UNSET+alt}", ""),
    ("${UNSET:-${PORT}}", "8080"), ("${UNSET:-${ALSO:-deep}}", "deep"), ("${UNSET:-x${PORT}y}", "x8080y"),
    ("$$SET", "$SET"), ("$${SET}", "${SET}"), ("cost: $$5", "cost: $5"),
    ("${SET?boom}", "value"), ("${EMPTY?boom}", ""), ("no dollar", "no dollar"),
    ("${UNSET:-a:b}", "a:b"), ("${UNSET:-}", ""),
])
def test_forms(template: str, expected: str) -> None:
    assert interpolate(template, ENV) == expected


def test_unset_without_default_is_empty_with_a_warning() -> None:
    warnings: list[str] = []
    assert interpolate("x${NOPE}y", ENV, warnings.append) == "xy"
    assert warnings == ['The "NOPE" variable is not set. Defaulting to a blank string.']


@pytest.mark.parametrize(("template", "words"), [
    ("${UNSET:?needs a value}", "required variable UNSET is missing a value: needs a value"),
    ("${EMPTY:?}", "required variable EMPTY is missing a value"),
    ("${UNSET?}", "required variable UNSET is missing a value: is not set"),
    ("${SET", "missing closing"), ("${}", "must be followed by a variable name"),
    ("${SET!x}", "unexpected"), ("a $ b", "lone '$'"), ("${UNSET:-${X}", "missing closing"),
])
def test_bad_templates_are_plain_errors(template: str, words: str) -> None:
    with pytest.raises(InterpolationError, match=words.replace("$", r"\$").replace("(", r"\(")):
        interpolate(template, ENV)


def test_dotenv_forms() -> None:
    text = (
        "# a comment\n"
        "A=1\n"
        "export B=two words # trailing comment\n"
        "C='single $A kept'\n"
        'D="double ${A} and \\n newline"\n'
        "E=${A}-${HOST_ONLY}\n"
        "F\n"
        'G="multi\nline"\n'
        "H=\n"
    )
    env = parse_env(text, ".env", {"HOST_ONLY": "h", "F": "from-host"}.get)
    assert env == {"A": "1", "B": "two words", "C": "single $A kept", "D": "double 1 and \n newline",
                   "E": "1-h", "F": "from-host", "G": "multi\nline", "H": ""}
