"""The ideal cache over a replay: a step could have hit when its key (definition + inputs, as the solver
keys it) was seen at an earlier commit; a miss of such a step is the cache's fault and is listed."""

from __future__ import annotations

from collections.abc import Sequence

from layerbuild.bench.model import CacheMiss, CommitOutcome, Ideal


def ideal(commits: Sequence[CommitOutcome]) -> Ideal:
    seen: dict[str, str] = {}  # key -> the first commit whose build had it
    steps = could = 0
    misses: list[CacheMiss] = []
    for commit in commits:
        if commit.ok:
            for step in commit.steps:
                if not step.counted:
                    continue
                steps += 1
                earlier = seen.get(step.key) if step.key else None
                if step.cached or earlier is not None:
                    could += 1
                if not step.cached and earlier is not None:
                    misses.append(CacheMiss(commit.commit, step.stage, step.index, step.instruction, step.reason,
                                            earlier))
        # A failed build's steps that finished are in the store all the same: later commits may hit them.
        for step in commit.steps:
            if step.key and step.counted:
                seen.setdefault(step.key, commit.commit)
    return Ideal(round(could / steps, 4) if steps else 1.0, steps, could, tuple(misses))
