"""The terminal table and summary lines of `bench history` (plain, as a pipe gets them)."""

from __future__ import annotations

import pytest

from layerbuild.bench.ideal import ideal
from layerbuild.bench.model import CommitOutcome, Comparison, HistoryReport, StepOutcome, WhatIf
from layerbuild.cli.bench_cmd import print_table


def test_the_table_shows_each_commit_and_the_summary_lines(capsys: pytest.CaptureFixture[str]) -> None:
    ok = CommitOutcome("a" * 40, "edit app", True, 1.5, ("app.txt",),
                       (StepOutcome("0", 1, "COPY . /app", "copy", False, "app.txt changed", 0.1, 10, "k1"),))
    bad = CommitOutcome("b" * 40, "break it", False, 0.2, (), (), error="Dockerfile:3: RUN false\nexit 1")
    report = HistoryReport("/src/app", "Dockerfile", ".", "warm", None, (ok, bad), ideal((ok, bad)),
                           (WhatIf("split-copy", "copy [manifests] first", "FROM x\n", 0.5, 1.25, 3.0),
                            WhatIf("move-later", "move `ARG V`", "", 0.0, 0.0, 0.0, accepted=False,
                                   rejected="the image differs: /x differs")),
                           (Comparison("docker", False, "no docker engine answers"),))
    print_table(report, plain=True)
    out = capsys.readouterr().out
    assert "aaaaaaa" in out and "COPY . /app: app.txt changed" in out
    assert "bbbbbbb" in out and "failed" in out and "Dockerfile:3: RUN false" in out
    assert "hit rate 0.0% (0/1 steps), ideal 0.0%, 0 miss(es) the cache should have avoided, 1 failed" in out
    assert "what-if [split-copy] copy [manifests] first: saves 1.25s, hit rate 50.0%" in out
    assert "what-if [move-later] move `ARG V`: rejected: the image differs: /x differs" in out
    assert "compare docker: no docker engine answers" in out
