"""Cache keys as data: an op's definition key, a step's input key, and the identity of its result.

Keys are sha256 (see `combine`): a record may be shared with other machines through a registry cache,
and whoever can write there must not be able to forge a key. Definition key: every field of the step's op (plan.ops), by construction: the canonical form walks
all dataclass fields, so a field added to an op is keyed without anyone remembering to. Input key:
definition + the *result* of the step before it + the results of the inputs it keys by result + the
content key of what it reads by content (COPY sources, bind-mount sources). Result id: the parent's
result + what this step produced (a layer's diff_id). Keying on results rather than on the parent's
key is what gives early cutoff: a re-executed step that produced the same layer leaves every later
key unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from layerbuild.plan import BaseImage, OpDef, Scratch

# Bumped whenever what a step's result depends on changes outside the op's fields: v3 is the
# hardened sandbox (its own network by default, seccomp, nodev, subordinate ids rootless, where
# rootless layers now carry the container's owners), whose results earlier records cannot stand for;
# v4: WORKDIR of a directory that exists gives an empty layer, as BuildKit's, where it gave none;
# v5: keys and the content fingerprints under them are sha256, where they were xxh3-128, so that a key
# can stand for its step in a cache shared between machines (a registry cache).
KEY_VERSION = "layerbuild-cache-v5"


def plain(value: Any) -> Any:
    """A dataclass tree as JSON-able data: every field, plus the type's name under "@type"."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)} | {
            "@type": type(value).__name__
        }
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def canonical(value: Any) -> bytes:
    """Stable bytes for a value made of dataclasses, tuples, dicts and scalars."""
    return _dumps(plain(value))


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def combine(*parts: str) -> str:
    """sha256 of the parts, NUL-separated (parts never contain NUL: they are hex or JSON)."""
    h = hashlib.sha256()
    h.update(KEY_VERSION.encode())
    for part in parts:
        h.update(b"\0")
        h.update(part.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def definition_key(op: OpDef) -> str:
    """What the op is: all of its fields, and its kind."""
    return definition(op)[0]


def definition(op: OpDef) -> tuple[str, Any]:
    """The op's definition key and its fields as data (what the build history keeps to name changes)."""
    data = plain(op)
    return combine(op.kind, _dumps(data).decode()), data


def input_key(definition: str, parent_result: str, dep_results: Iterable[str], content: str | None) -> str:
    return combine("input", definition, parent_result, *dep_results, content or "-")


def by_results_key(definition: str, parent_result: str, dep_results: Iterable[str]) -> str:
    """A step's key by its sources' results alone (see Solver: steps that read other stages' files)."""
    return combine("by-results", definition, parent_result, *dep_results)


def base_result(base: Scratch | BaseImage) -> str:
    if isinstance(base, Scratch):
        return combine("scratch")
    return combine("image", base.identity)


def layer_result(parent_result: str, diff_id: str | None, definition: str) -> str:
    """A step's result: its layer if it made one, else (a config-only step) its definition."""
    if diff_id is not None:
        return combine("layer", parent_result, diff_id)
    return combine("meta", parent_result, definition)
