"""Cache hit rates over a project's real git history: replays, the ideal, what-if rewrites, reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerbuild.lazy import lazy_getattr

if TYPE_CHECKING:
    from layerbuild.bench.measure import history
    from layerbuild.bench.model import (
        CacheMiss,
        CommitOutcome,
        Comparison,
        HistoryReport,
        Ideal,
        StepOutcome,
        Totals,
        WhatIf,
    )
    from layerbuild.bench.output import write_report

_LAZY = {
    "history": "layerbuild.bench.measure",
    "write_report": "layerbuild.bench.output",
    **dict.fromkeys(("CacheMiss", "CommitOutcome", "Comparison", "HistoryReport", "Ideal", "StepOutcome", "Totals",
                     "WhatIf"), "layerbuild.bench.model"),
}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = ["CacheMiss", "CommitOutcome", "Comparison", "HistoryReport", "Ideal", "StepOutcome", "Totals", "WhatIf",
           "history", "write_report"]
