"""Why a step missed the cache: compare it with the same step of the last build of this Dockerfile."""

from __future__ import annotations

import json
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
    deps: tuple[str, ...] = ()
    content: str | None = None
    files: Mapping[str, str] | None = None
    input: str | None = None
    reason: str | None = None
    layer: str | None = None
    op: Mapping[str, Any] | None = None
    alias: str | None = None  # the key by its sources' results, for a step that reads other stages' files

    def to_json(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict: that deep-copies the (large) file map.
        return {
            "stage": self.stage, "index": self.index, "text": self.text, "kind": self.kind,
            "definition": self.definition, "parent": self.parent, "result": self.result,
            "args": dict(self.args), "deps": list(self.deps), "content": self.content,
            "files": dict(self.files) if self.files is not None else None, "input": self.input,
            "reason": self.reason, "layer": self.layer, "op": self.op, "alias": self.alias,
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
            return f"bind mount {reason}" if current.kind == "exec" else reason
    if prev.parent != current.parent:
        return _upstream(current, earlier, previous)
    if tuple(prev.deps) != tuple(current.deps):
        return "a stage it reads from produced different files"
    if prev.definition != current.definition:
        if prev.op is None and current.op is not None:
            return "the last build was keyed by an older layerbuild (cache keys now cover every op field)"
        reason = op_changes(prev.op, current.op)
        if reason:
            return reason
        return "its expanded form changed (variables or flags from the base or an earlier step)"
    if prev.content != current.content:
        return "source files changed"
    if prev.input == current.input:
        return "its cache record is gone (pruned)"
    return "cache record not found"


# How a changed op field is named in a miss reason: the instruction that sets it, where there is one.
_FIELD_NAMES = {"user": "USER", "workdir": "WORKDIR", "shell": "SHELL", "path": "WORKDIR"}


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    if value is None or value == "":
        return "(none)"
    return str(value)


def op_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """The fields of an op definition that differ, named: `USER 1000 → 2000`, `network default → none`,
    `env MODE changed ('a' → 'b')`; None when there is nothing to compare."""
    if not before or not after:
        return None
    if before.get("@type") != after.get("@type"):
        return f"the step is now a {after.get('@type')} (was a {before.get('@type')})"
    diffs: list[str] = []
    for name in after:
        old, new = before.get(name), after.get(name)
        if name == "@type" or old == new:
            continue
        if name == "env":
            diffs.append(_dict_changes("env", dict(map(tuple, old or ())), dict(map(tuple, new or ())))
                         or "env changed")
        elif name == "extra_hosts":
            if not old and not new:
                continue  # a record from before the field existed
            diffs.append(f"--add-host {_hosts(old)} → {_hosts(new)}")
        elif name in ("mounts", "files", "contents"):
            diffs.append(f"{name} changed: {_short(_shown(old))} → {_short(_shown(new))}")
        else:
            label = _FIELD_NAMES.get(name, name)
            diffs.append(f"{label} {_short(_shown(old), 70)} → {_short(_shown(new), 70)}")
    return "; ".join(diffs) or None


def _hosts(value: Any) -> str:
    """`extra_hosts` pairs as `--add-host` spells them: `db:10.0.0.5, cache:10.0.0.6`."""
    pairs = [f"{pair[0]}:{pair[1]}" for pair in value or () if len(pair) == 2]
    return _short(", ".join(pairs), 70) if pairs else "(none)"


def _upstream(current: StepRecord, earlier: Sequence[StepRecord], previous: History) -> str:
    for step in reversed(earlier):
        before = previous.get((step.stage, step.index))
        if step.kind == "base":
            break
        if step.result == step.parent:
            continue  # a config-only step changes no files
        if before is None or before.result != step.result:
            if step.reason and step.reason.startswith(UPSTREAM):
                return step.reason  # name the root cause, not the chain that led here
            detail = f": {step.reason}" if step.reason else ""
            return f"{UPSTREAM}`{_short(step.text)}`{detail}"
    first = earlier[0] if earlier else None
    if first is not None and first.kind == "base":
        return first.reason or f"base changed: `{first.text}`"
    return "an upstream step changed its output"


UPSTREAM = "upstream step changed its output: "


def _short(text: str, limit: int = 60) -> str:
    """An instruction on one line, white space folded, cut to `limit` characters."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"
