"""Cache keys, cache lookups and the order of execution of a plan."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerbuild.solve.explain import History, StepRecord, explain_miss, file_changes, history_from_json
    from layerbuild.solve.report import BuildEvent, BuildResult, ImageRef, StepReport, Summary
    from layerbuild.solve.solver import Cache, Content, Op, Output, SolveOptions, Solver, SolveResult, State

# Loaded on first use, so that `layerbuild.solve.report` alone stays cheap to import.
_LAZY = {
    **dict.fromkeys(("History", "StepRecord", "explain_miss", "file_changes", "history_from_json"),
                    "layerbuild.solve.explain"),
    **dict.fromkeys(("BuildEvent", "BuildResult", "ImageRef", "StepReport", "Summary"), "layerbuild.solve.report"),
    **dict.fromkeys(("Cache", "Content", "Op", "Output", "SolveOptions", "Solver", "SolveResult", "State"),
                    "layerbuild.solve.solver"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'layerbuild.solve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BuildEvent",
    "BuildResult",
    "Cache",
    "Content",
    "History",
    "ImageRef",
    "Op",
    "Output",
    "SolveOptions",
    "SolveResult",
    "Solver",
    "State",
    "StepRecord",
    "StepReport",
    "Summary",
    "explain_miss",
    "file_changes",
    "history_from_json",
]
