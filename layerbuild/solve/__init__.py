"""Cache keys, cache lookups and the order of execution of a plan."""

from layerbuild.solve.explain import History, StepRecord, explain_miss, file_changes, history_from_json
from layerbuild.solve.report import BuildEvent, BuildResult, ImageRef, StepReport, Summary
from layerbuild.solve.solver import Cache, Content, Op, Output, SolveOptions, Solver, SolveResult, State

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
