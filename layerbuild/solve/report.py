"""The build report as typed values: the `--report` / `--progress json` contract of DESIGN.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path
if TYPE_CHECKING:
    from typing import Any, Literal

    EventType = Literal[
        "build.planned", "build.pulled", "step.started", "step.log", "step.cached", "step.finished", "step.failed",
        "build.finished", "build.pushed", "build.cache",
    ]



@dataclass(frozen=True)
class StepReport:
    """One step of the build: hit or miss, and for a miss the concrete reason."""

    stage: str
    index: int
    instruction: str
    kind: str
    cached: bool
    reason: str | None = None
    duration_s: float = 0.0
    layer: str | None = None
    size: int | None = None
    line: int | None = None
    # The solver's input key of the step (definition + inputs), None for steps without one: what a
    # step is looked up by, so tools comparing builds (bench) can tell "seen before" from "new".
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "index": self.index, "instruction": self.instruction, "kind": self.kind,
            "cached": self.cached, "reason": self.reason, "duration_s": round(self.duration_s, 3),
            "layer": self.layer, "size": self.size,
        }  # fmt: skip


@dataclass(frozen=True)
class Summary:
    """A build's totals: steps, cached and executed, the hit rate and the duration."""

    steps: int
    cached: int
    executed: int
    hit_rate: float
    duration_s: float

    @staticmethod
    def of(steps: tuple[StepReport, ...], duration_s: float) -> Summary:
        counted = [s for s in steps if s.kind in ("exec", "copy")]
        cached = sum(1 for s in counted if s.cached)
        rate = cached / len(counted) if counted else 1.0
        return Summary(len(steps), cached, len(counted) - cached, round(rate, 4), round(duration_s, 3))

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "cached": self.cached, "executed": self.executed,
                "hit_rate": self.hit_rate, "duration_s": self.duration_s}


@dataclass(frozen=True)
class ImageRef:
    """The image a build made: its id (the config digest) and the tags it got."""

    id: str
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tags": list(self.tags)}


@dataclass(frozen=True)
class BuildResult:
    """What `layerbuild.build()` returns and `--report` writes."""

    image: ImageRef
    steps: tuple[StepReport, ...]
    summary: Summary
    warnings: tuple[str, ...] = field(default=())
    # `build --dry-run`: every step looked up, none run, nothing stored; the image has no id then.
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        image = self.image.to_json()
        if self.dry_run:
            image["id"] = None
        out: dict[str, Any] = {"image": image, "steps": [s.to_json() for s in self.steps],
                               "summary": self.summary.to_json()}
        if self.dry_run:
            out["dry_run"] = True
        return out

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> BuildResult:
        image = data["image"]
        steps = tuple(
            StepReport(**{k: s.get(k) for k in ("stage", "index", "instruction", "kind", "cached", "reason",
                                                 "duration_s", "layer", "size")})
            for s in data["steps"]
        )
        return BuildResult(ImageRef(image["id"] or "", tuple(image.get("tags", ()))), steps, Summary(**data["summary"]),
                           dry_run=bool(data.get("dry_run", False)))


@dataclass(frozen=True)
class BuildEvent:
    """One progress event: the plan (its text in `message`); a step started, was found in the cache,
    finished or failed; or the end, with the whole report."""

    type: EventType
    step: StepReport | None = None
    result: BuildResult | None = None
    message: str | None = None
    # build.pushed: the push's line in plain words (`message`) and as docker's JSON message (`detail`)
    detail: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        if self.type == "build.finished" and self.result is not None:
            return {"event": self.type, **self.result.to_json()}
        out: dict[str, Any] = {"event": self.type}
        if self.detail is not None:
            out["push"] = dict(self.detail)
        if self.step is not None:
            out.update(self.step.to_json())
        if self.message is not None:
            out["message"] = self.message
        return out
