"""Cache keys, cache lookups and the order of execution of a plan."""

from __future__ import annotations

from layerbuild.lazy import lazy_getattr

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.solve.explain import History, StepRecord, explain_miss, file_changes, history_from_json
    from layerbuild.solve.report import BuildEvent, BuildResult, ImageRef, StepReport, Summary
    from layerbuild.solve.solver import (
        Cache,
        Content,
        Executor,
        Inputs,
        Output,
        SolveOptions,
        Solver,
        SolveResult,
        State,
        Task,
    )

# Loaded on first use, so that `layerbuild.solve.report` alone stays cheap to import.
_LAZY = {
    **dict.fromkeys(("History", "StepRecord", "explain_miss", "file_changes", "history_from_json"),
                    "layerbuild.solve.explain"),
    **dict.fromkeys(("BuildEvent", "BuildResult", "ImageRef", "StepReport", "Summary"), "layerbuild.solve.report"),
    **dict.fromkeys(("Cache", "Content", "Executor", "Inputs", "Output", "SolveOptions", "Solver", "SolveResult",
                     "State", "Task"),
                    "layerbuild.solve.solver"),
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "BuildEvent",
    "BuildResult",
    "Cache",
    "Content",
    "Executor",
    "History",
    "ImageRef",
    "Inputs",
    "Output",
    "SolveOptions",
    "SolveResult",
    "Solver",
    "State",
    "StepRecord",
    "StepReport",
    "Summary",
    "Task",
    "explain_miss",
    "file_changes",
    "history_from_json",
]
