"""`-e` for `run` and `exec`: one rule (runtime.containers.apply_env)."""

from __future__ import annotations

import pytest

from layerbuild.errors import UsageError
from layerbuild.runtime.containers import apply_env
from layerbuild.runtime.runner import merge_env


def test_set_copy_and_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FROM_CALLER", "yes")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    env = {"PATH": "/bin", "KEEP": "image"}
    apply_env(env, ["A=1", "B=", "FROM_CALLER", "NOT_SET_ANYWHERE", "KEEP", "C=x=y"])
    assert env == {"PATH": "/bin", "KEEP": "image", "A": "1", "B": "", "FROM_CALLER": "yes", "C": "x=y"}
    assert merge_env(["PATH=/bin", "A=0"], ["A=1"]) == ["PATH=/bin", "A=1"]


def test_a_variable_without_a_name_is_refused() -> None:
    with pytest.raises(UsageError, match="invalid environment variable '=oops'"):
        apply_env({}, ["=oops"])
