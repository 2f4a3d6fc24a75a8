"""What a replay found, as typed values: per step, per commit, the ideal and the what-ifs (`history.json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COUNTED = ("exec", "copy")  # the steps a hit rate counts, as a build's report counts them


@dataclass(frozen=True)
class StepOutcome:
    """One step of one commit's build: hit or miss, why, what it cost."""

    stage: str
    index: int
    instruction: str
    kind: str
    cached: bool
    reason: str | None
    duration_s: float
    size: int | None
    key: str | None = None

    @property
    def counted(self) -> bool:
        return self.kind in COUNTED

    @property
    def bytes_written(self) -> int:
        """What the step wrote to the store: its layer when it ran, nothing when it hit."""
        return 0 if self.cached else (self.size or 0)

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "index": self.index, "instruction": self.instruction, "kind": self.kind,
                "cached": self.cached, "reason": self.reason, "duration_s": round(self.duration_s, 3),
                "size": self.size, "bytes_written": self.bytes_written, "key": self.key}


@dataclass(frozen=True)
class CommitSummary:
    steps: int
    cached: int
    executed: int
    hit_rate: float

    @staticmethod
    def of(steps: tuple[StepOutcome, ...]) -> CommitSummary:
        counted = [s for s in steps if s.counted]
        cached = sum(1 for s in counted if s.cached)
        return CommitSummary(len(steps), cached, len(counted) - cached,
                             round(cached / len(counted), 4) if counted else 1.0)

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "cached": self.cached, "executed": self.executed, "hit_rate": self.hit_rate}


@dataclass(frozen=True)
class CommitOutcome:
    """One commit replayed: what changed in the context, whether it built, and its steps."""

    commit: str
    subject: str
    ok: bool
    duration_s: float
    changed_files: tuple[str, ...]
    steps: tuple[StepOutcome, ...]
    error: str | None = None
    bytes_written: int = 0
    image: str | None = None

    @property
    def summary(self) -> CommitSummary:
        return CommitSummary.of(self.steps)

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "subject": self.subject, "ok": self.ok, "duration_s": round(self.duration_s, 3),
                "changed_files": list(self.changed_files), "steps": [s.to_json() for s in self.steps],
                "summary": self.summary.to_json(), "error": self.error, "bytes_written": self.bytes_written,
                "image": self.image}


@dataclass(frozen=True)
class Totals:
    """A replay as one figure: steps counted and hit over every commit that built, and its seconds."""

    steps: int
    cached: int
    hit_rate: float
    duration_s: float
    failed: int

    @staticmethod
    def of(commits: tuple[CommitOutcome, ...]) -> Totals:
        built = [c for c in commits if c.ok]
        counted = [s for c in built for s in c.steps if s.counted]
        cached = sum(1 for s in counted if s.cached)
        return Totals(len(counted), cached, round(cached / len(counted), 4) if counted else 1.0,
                      round(sum(c.duration_s for c in built), 3), len(commits) - len(built))

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "cached": self.cached, "hit_rate": self.hit_rate,
                "duration_s": self.duration_s, "failed_commits": self.failed}


@dataclass(frozen=True)
class CacheMiss:
    """A step that missed although a build of an earlier commit had the same key: the cache's fault."""

    commit: str
    stage: str
    index: int
    instruction: str
    reason: str | None
    seen_at: str

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "stage": self.stage, "index": self.index, "instruction": self.instruction,
                "reason": self.reason, "seen_at": self.seen_at}


@dataclass(frozen=True)
class Ideal:
    """The best any cache could have done: every step whose key was seen at an earlier commit hits."""

    hit_rate: float
    steps: int
    could_hit: int
    cache_misses: tuple[CacheMiss, ...]

    def to_json(self) -> dict[str, Any]:
        return {"hit_rate": self.hit_rate, "steps": self.steps, "could_hit": self.could_hit,
                "cache_misses": [m.to_json() for m in self.cache_misses]}


@dataclass(frozen=True)
class WhatIf:
    """A rewrite of the Dockerfile, replayed over the same history: its hit rate and the seconds it saved
    against the replay of the Dockerfile as it is (negative: it cost time). `accepted` is False, with
    `rejected` saying why, for a rewrite whose image at the last commit differs in files or config."""

    rule: str
    description: str
    dockerfile: str
    hit_rate: float
    saved_s: float
    duration_s: float
    accepted: bool = True
    rejected: str | None = None
    commits: tuple[CommitOutcome, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "description": self.description, "dockerfile": self.dockerfile,
                "hit_rate": self.hit_rate, "saved_s": round(self.saved_s, 3), "duration_s": round(self.duration_s, 3),
                "accepted": self.accepted, "rejected": self.rejected,
                "per_commit": [{"commit": c.commit, "ok": c.ok, "duration_s": round(c.duration_s, 3),
                                "hit_rate": c.summary.hit_rate} for c in self.commits]}


@dataclass(frozen=True)
class Comparison:
    """The same replay through another builder (docker/BuildKit), or why it was not made."""

    builder: str
    available: bool
    message: str
    commits: tuple[CommitOutcome, ...] = ()

    def to_json(self) -> dict[str, Any]:
        totals = Totals.of(self.commits)
        return {"builder": self.builder, "available": self.available, "message": self.message,
                "hit_rate": totals.hit_rate if self.commits else None,
                "duration_s": totals.duration_s if self.commits else None,
                "commits": [c.to_json() for c in self.commits]}


@dataclass(frozen=True)
class HistoryReport:
    """`layerbuild bench history`'s answer (what `history.json` holds)."""

    repo: str
    dockerfile: str
    context: str
    runner: str
    target: str | None
    commits: tuple[CommitOutcome, ...]
    ideal: Ideal
    whatif: tuple[WhatIf, ...] = ()
    compare: tuple[Comparison, ...] = field(default=())

    @property
    def totals(self) -> Totals:
        return Totals.of(self.commits)

    def to_json(self) -> dict[str, Any]:
        return {"repo": self.repo, "dockerfile": self.dockerfile, "context": self.context, "runner": self.runner,
                "target": self.target, "commits": [c.to_json() for c in self.commits],
                "summary": self.totals.to_json(), "ideal": self.ideal.to_json(),
                "whatif": [w.to_json() for w in self.whatif], "compare": [c.to_json() for c in self.compare]}
