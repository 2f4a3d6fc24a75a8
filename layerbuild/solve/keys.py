"""Cache keys as data: a step's definition key, its input key, and the identity of its result.

Definition key: what the step is (expanded instruction, the build args it sees, its environment
for RUN, mounts, network, platform). Input key: definition + the *result* of the step before it
(+ the results of the stages it reads + the content of the files it copies). Result id: the
parent's result + what this step produced (a layer's diff_id). Keying on results rather than on
the parent's key is what gives early cutoff: a re-executed step that produced the same layer
leaves every later key unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import xxhash

from layerbuild.plan import BaseImage, Scratch, Step

KEY_VERSION = "layerbuild-cache-v1"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name != "node"  # where it was written is not what it is
        } | {"@type": type(value).__name__}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def canonical(value: Any) -> bytes:
    """Stable bytes for a value made of dataclasses, tuples, dicts and scalars."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def combine(*parts: str) -> str:
    """xxh3-128 of the parts, NUL-separated (parts never contain NUL: they are hex or JSON)."""
    h = xxhash.xxh3_128()
    h.update(KEY_VERSION.encode())
    for part in parts:
        h.update(b"\0")
        h.update(part.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def definition_key(step: Step, platform: str) -> str:
    """What the step is, independent of what it runs on."""
    env = step.env if step.kind == "exec" else ()
    return combine(step.kind, canonical(step.command).decode(), canonical(step.args).decode(),
                   canonical(env).decode(), platform)


def input_key(definition: str, parent_result: str, dep_results: Iterable[str], content: str | None) -> str:
    return combine("input", definition, parent_result, *dep_results, content or "-")


def base_result(base: Scratch | BaseImage) -> str:
    if isinstance(base, Scratch):
        return combine("scratch")
    return combine("image", base.identity)


def layer_result(parent_result: str, diff_id: str | None, definition: str) -> str:
    """A step's result: its layer if it made one, else (a config-only step) its definition."""
    if diff_id is not None:
        return combine("layer", parent_result, diff_id)
    return combine("meta", parent_result, definition)
