"""The Compose Specification's merge rules, applied to services already in long syntax.

Mappings are merged key by key (the later file wins); `command`, `entrypoint` and `healthcheck.test`
are replaced; `ports` are unique by (host_ip, target, published, protocol), `volumes`, `secrets`
and `configs` by target, and a later entry replaces the earlier one with that key; other sequences
are appended with duplicates dropped. `!reset` removes the attribute, `!override` replaces it whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from layerbuild.compose.yamlsrc import Override, Reset

REPLACED = {"command", "entrypoint"}
MAPPINGS = {"environment", "labels", "annotations", "sysctls", "extra_hosts", "depends_on", "networks",
            "ulimits", "storage_opt"}
BUILD_MAPPINGS = {"args", "labels", "additional_contexts", "ssh", "extra_hosts"}


def _port_key(p: dict[str, Any]) -> Any:
    return (p.get("host_ip"), p.get("target"), p.get("published"), p.get("protocol", "tcp"))


def _target(default_dir: str) -> Callable[[dict[str, Any]], Any]:
    def key(entry: dict[str, Any]) -> Any:
        return entry.get("target") or f"{default_dir}{entry.get('source')}"
    return key


UNIQUE_BY: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ports": _port_key, "volumes": _target(""), "secrets": _target("/run/secrets/"), "configs": _target("/"),
}


def strip_tags(value: Any) -> Any:
    """A value with `!override` unwrapped and `!reset` attributes removed (for a file on its own)."""
    if isinstance(value, Override):
        return strip_tags(value.value)
    if isinstance(value, dict):
        return {k: strip_tags(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [strip_tags(v) for v in value if not isinstance(v, Reset)]
    return value


def merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` (a later file's definition of the service) merged onto `base`; neither is changed."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Reset):
            out.pop(key, None)
        elif isinstance(value, Override) or key not in out or key in REPLACED:
            out[key] = strip_tags(value)
        elif key in UNIQUE_BY:
            out[key] = unique_merge(out[key], value, UNIQUE_BY[key])
        elif key == "networks":
            out[key] = _merge_networks(out[key], value)
        elif key == "healthcheck":
            out[key] = merge_mapping(out[key], value, replaced={"test"})
        elif key == "build":
            out[key] = merge_mapping(out[key], value, mappings=BUILD_MAPPINGS)
        else:
            out[key] = merge_value(out[key], value)
    return out


def merge_mapping(base: dict[str, Any], over: dict[str, Any], *, replaced: set[str] = frozenset(),  # type: ignore[assignment]
                  mappings: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Reset):
            out.pop(key, None)
        elif isinstance(value, Override) or key not in out or key in replaced:
            out[key] = strip_tags(value)
        else:
            out[key] = merge_value(out[key], value)
    return out


def merge_value(base: Any, over: Any) -> Any:
    """The generic rule: mappings merged, sequences appended without duplicates, scalars replaced."""
    if isinstance(over, Override):
        return strip_tags(over.value)
    if isinstance(base, dict) and isinstance(over, dict):
        return merge_mapping(base, over)
    if isinstance(base, list) and isinstance(over, list):
        out = list(base)
        for item in strip_tags(over):
            if item not in out:
                out.append(item)
        return out
    return strip_tags(over)


def unique_merge(base: list[dict[str, Any]], over: Any, key: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    if isinstance(over, Override):
        return list(strip_tags(over.value))
    out = list(base)
    for entry in strip_tags(over):
        k = key(entry)
        for i, old in enumerate(out):
            if key(old) == k:  # the later entry replaces the earlier one in its place (as compose-go does)
                out[i] = entry
                break
        else:
            out.append(entry)
    return out


def _merge_networks(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for name, spec in over.items():
        if isinstance(spec, Reset):
            out.pop(name, None)
        elif out.get(name) and spec:
            out[name] = merge_mapping(out[name], spec)
        elif spec or name not in out:
            out[name] = strip_tags(spec)
    return out


def merge_resources(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Top-level `networks:`, `volumes:`, `secrets:`, `configs:`: each resource merged as a mapping."""
    out = dict(base)
    for name, spec in over.items():
        if isinstance(spec, Reset):
            out.pop(name, None)
        elif isinstance(out.get(name), dict) and isinstance(spec, dict):
            out[name] = merge_mapping(out[name], spec)
        else:
            out[name] = strip_tags(spec)
    return out
