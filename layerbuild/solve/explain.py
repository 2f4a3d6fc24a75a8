"""Why a step missed the cache: compare it with the same step of the last build of this Dockerfile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SHOW_FILES = 3


@dataclass(frozen=True)
class StepRecord:
    """What went into one step's key, kept in the build history to explain the next build's misses."""

    stage: str
    index: int
    text: str
    kind: str
    definition: str
    parent: str
    result: str
    args: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    content: str | None = None
    files: Mapping[str, str] | None = None
    input: str | None = None
    reason: str | None = None
    layer: str | None = None

    def to_json(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict: that deep-copies the (large) file map.
        return {
            "stage": self.stage, "index": self.index, "text": self.text, "kind": self.kind,
            "definition": self.definition, "parent": self.parent, "result": self.result,
            "args": dict(self.args), "env": dict(self.env), "deps": list(self.deps), "content": self.content,
            "files": dict(self.files) if self.files is not None else None, "input": self.input,
            "reason": self.reason, "layer": self.layer,
        }  # fmt: skip

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> StepRecord:
        values = dict(data)
        values["deps"] = tuple(values.get("deps") or ())
        known = {f for f in StepRecord.__dataclass_fields__}
        return StepRecord(**{k: v for k, v in values.items() if k in known})


History = Mapping[tuple[str, int], StepRecord]


def history_from_json(steps: Any) -> dict[tuple[str, int], StepRecord]:
    out: dict[tuple[str, int], StepRecord] = {}
    for item in steps or ():
        try:
            record = StepRecord.from_json(item)
        except (TypeError, ValueError):
            continue  # an older or damaged history entry explains nothing
        out[record.stage, record.index] = record
    return out


def _names(paths: Sequence[str], verb: str) -> str:
    shown = ", ".join(sorted(paths)[:SHOW_FILES])
    more = len(paths) - SHOW_FILES
    return f"{shown} and {more} more {verb}" if more > 0 else f"{shown} {verb}"


def file_changes(before: Mapping[str, str], after: Mapping[str, str]) -> str | None:
    """`src/app.py changed` / `a, b, c and 4 more changed; x added; y removed`, or None if equal."""
    changed = [p for p in after if p in before and before[p] != after[p]]
    added = [p for p in after if p not in before]
    removed = [p for p in before if p not in after]
    parts = []
    if changed:
        parts.append(_names(changed, "changed"))
    if added:
        parts.append(_names(added, "added"))
    if removed:
        parts.append(_names(removed, "removed"))
    return "; ".join(parts) or None


def _dict_changes(kind: str, before: Mapping[str, str], after: Mapping[str, str]) -> str | None:
    keys = sorted(set(before) | set(after))
    diffs = []
    for key in keys:
        if before.get(key) != after.get(key):
            if key not in before:
                diffs.append(f"{kind} {key} set to {after[key]!r}")
            elif key not in after:
                diffs.append(f"{kind} {key} no longer set (was {before[key]!r})")
            else:
                diffs.append(f"{kind} {key} changed ({before[key]!r} → {after[key]!r})")
    if not diffs:
        return None
    return "; ".join(diffs[:SHOW_FILES]) + (f" and {len(diffs) - SHOW_FILES} more" if len(diffs) > SHOW_FILES else "")


def explain_miss(
    current: StepRecord,
    earlier: Sequence[StepRecord],
    previous: History | None,
    *,
    no_cache: str | None = None,
) -> str:
    """The concrete reason `current` had to run.

    `earlier` holds this build's records of the steps before it in the same stage (in order);
    `previous` the last build of the same Dockerfile and target, or None if there was none.
    """
    if no_cache:
        return no_cache
    if previous is None:
        return "no earlier build"
    prev = previous.get((current.stage, current.index))
    if prev is None:
        return "new step (not in the last build)"
    if prev.text != current.text:
        return f"instruction changed (was: {_short(prev.text, 80)})"
    reason = _dict_changes("build-arg", prev.args, current.args)
    if reason:
        return reason
    if current.files is not None and prev.files is not None:
        reason = file_changes(prev.files, current.files)
        if reason:
            return reason
    if prev.parent != current.parent:
        return _upstream(current, earlier, previous)
    if tuple(prev.deps) != tuple(current.deps):
        return "a stage it copies from produced different files"
    if current.kind == "exec":
        reason = _dict_changes("env", prev.env, current.env)
        if reason:
            return reason
    if prev.definition != current.definition:
        return "its expanded form changed (variables or flags from the base or an earlier step)"
    if prev.content != current.content:
        return "source files changed"
    if prev.input == current.input:
        return "its cache record is gone (pruned)"
    return "cache record not found"


def _upstream(current: StepRecord, earlier: Sequence[StepRecord], previous: History) -> str:
    for step in reversed(earlier):
        before = previous.get((step.stage, step.index))
        if step.result == step.parent:
            continue  # a config-only step changes no files
        if before is None or before.result != step.result:
            if step.reason and step.reason.startswith(UPSTREAM):
                return step.reason  # name the root cause, not the chain that led here
            detail = f": {step.reason}" if step.reason else ""
            return f"{UPSTREAM}`{_short(step.text)}`{detail}"
    first = earlier[0] if earlier else None
    if first is not None and first.kind == "base":
        return f"base changed: `{first.text}`" + (f" ({first.reason})" if first.reason else "")
    return "an upstream step changed its output"


UPSTREAM = "upstream step changed its output: "


def _short(text: str, limit: int = 60) -> str:
    """An instruction on one line, white space folded, cut to `limit` characters."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"
