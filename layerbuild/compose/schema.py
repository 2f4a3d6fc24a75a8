"""The Compose Specification's file format as a JSON schema, and the check that names file, line and key.

No well-kept package ships the specification's own schema, so this one is written from the
specification's text (services, networks, volumes, secrets, configs, include, extends, profiles,
the short and long syntaxes); a file is checked after interpolation, before any merge, so each
error points into the file that has it. `x-` keys are allowed everywhere an extension may stand.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from layerbuild.compose.yamlsrc import Lines, key_text
from layerbuild.errors import ComposeFileError

STR: dict[str, Any] = {"type": "string"}
NUM_STR: dict[str, Any] = {"type": ["number", "string"]}
INT_STR: dict[str, Any] = {"type": ["integer", "string"]}
BOOL_STR: dict[str, Any] = {"type": ["boolean", "string"]}
ANY_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}
STR_LIST: dict[str, Any] = {"type": "array", "items": STR}
UNIQUE_STR_LIST: dict[str, Any] = {"type": "array", "items": STR, "uniqueItems": True}
STR_OR_LIST: dict[str, Any] = {"oneOf": [STR, STR_LIST]}
EXT: dict[str, Any] = {"^x-": {}}
# KEY=VALUE list, or a mapping of scalars (environment, labels, build args, …)
LIST_OR_DICT: dict[str, Any] = {"oneOf": [
    {"type": "object", "patternProperties": {".+": ANY_SCALAR}, "additionalProperties": False},
    {"type": "array", "items": STR, "uniqueItems": True},
]}


def obj(props: dict[str, Any], required: tuple[str, ...] = (), *, extensions: bool = True) -> dict[str, Any]:
    """A mapping with exactly these keys (plus `x-` extensions)."""
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if extensions:
        out["patternProperties"] = EXT
    if required:
        out["required"] = list(required)
    return out


def dict_of(value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "patternProperties": {"^[a-zA-Z0-9._-]+$": value}, "additionalProperties": False}


def _healthcheck() -> dict[str, Any]:
    return obj({
        "disable": BOOL_STR, "interval": STR, "retries": NUM_STR, "test": STR_OR_LIST, "timeout": STR,
        "start_period": STR, "start_interval": STR,
    })


def _build() -> dict[str, Any]:
    return {"oneOf": [STR, obj({
        "context": STR, "dockerfile": STR, "dockerfile_inline": STR, "entitlements": STR_LIST,
        "args": LIST_OR_DICT, "ssh": LIST_OR_DICT, "labels": LIST_OR_DICT,
        "cache_from": STR_LIST, "cache_to": STR_LIST, "no_cache": BOOL_STR,
        "additional_contexts": LIST_OR_DICT, "network": STR, "pull": BOOL_STR, "target": STR,
        "shm_size": NUM_STR, "extra_hosts": LIST_OR_DICT, "isolation": STR, "privileged": BOOL_STR,
        "secrets": _service_refs(), "tags": STR_LIST, "ulimits": _ulimits(), "platforms": STR_LIST,
    })]}


def _service_refs() -> dict[str, Any]:
    """`secrets:` and `configs:` of a service: names, or {source, target, uid, gid, mode}."""
    return {"type": "array", "items": {"oneOf": [STR, obj({
        "source": STR, "target": STR, "uid": STR, "gid": STR, "mode": NUM_STR,
    }, ("source",))]}}


def _ulimits() -> dict[str, Any]:
    return {"type": "object", "patternProperties": {"^[a-z]+$": {"oneOf": [
        INT_STR, obj({"hard": INT_STR, "soft": INT_STR}, ("soft", "hard")),
    ]}}, "additionalProperties": False}


def _ports() -> dict[str, Any]:
    return {"type": "array", "items": {"oneOf": [NUM_STR, obj({
        "name": STR, "mode": STR, "host_ip": STR, "target": INT_STR, "published": NUM_STR,
        "protocol": STR, "app_protocol": STR,
    })]}}


def _volumes() -> dict[str, Any]:
    return {"type": "array", "items": {"oneOf": [STR, obj({
        "type": {"type": "string", "enum": ["bind", "volume", "tmpfs", "npipe", "cluster", "image"]},
        "source": STR, "target": STR, "read_only": BOOL_STR, "consistency": STR,
        "bind": obj({"propagation": STR, "create_host_path": BOOL_STR, "recursive": STR, "selinux": STR}),
        "volume": obj({"nocopy": BOOL_STR, "subpath": STR, "labels": LIST_OR_DICT}),
        "tmpfs": obj({"size": INT_STR, "mode": NUM_STR}),
        "image": obj({"subpath": STR}),
    }, ("type",))]}, "uniqueItems": True}


def _depends_on() -> dict[str, Any]:
    return {"oneOf": [UNIQUE_STR_LIST, {"type": "object", "patternProperties": {"^[a-zA-Z0-9._-]+$": obj({
        "condition": {"type": "string",
                      "enum": ["service_started", "service_healthy", "service_completed_successfully"]},
        "restart": BOOL_STR, "required": BOOL_STR,
    }, ("condition",))}, "additionalProperties": False}]}


def _networks_of_service() -> dict[str, Any]:
    return {"oneOf": [UNIQUE_STR_LIST, {"type": "object", "patternProperties": {"^[a-zA-Z0-9._-]+$": {
        "oneOf": [obj({
            "aliases": UNIQUE_STR_LIST, "ipv4_address": STR, "ipv6_address": STR, "link_local_ips": STR_LIST,
            "mac_address": STR, "driver_opts": {"type": "object"}, "priority": NUM_STR, "gw_priority": NUM_STR,
            "interface_name": STR,
        }), {"type": "null"}]}}, "additionalProperties": False}]}


def _env_file() -> dict[str, Any]:
    entry = {"oneOf": [STR, obj({"path": STR, "required": BOOL_STR, "format": STR}, ("path",))]}
    return {"oneOf": [STR, {"type": "array", "items": entry}]}


def _service() -> dict[str, Any]:
    scalar_props = {name: STR for name in (
        "cgroup", "cgroup_parent", "container_name", "cpuset", "domainname", "hostname", "image", "ipc",
        "isolation", "mac_address", "network_mode", "pid", "platform", "pull_policy", "pull_refresh_after",
        "runtime", "stop_grace_period", "stop_signal", "user", "userns_mode", "uts", "working_dir",
    )}
    num_props = {name: NUM_STR for name in (
        "cpu_count", "cpu_percent", "cpu_shares", "cpu_quota", "cpu_period", "cpu_rt_period", "cpu_rt_runtime",
        "cpus", "mem_limit", "mem_reservation", "mem_swappiness", "memswap_limit", "oom_score_adj",
        "pids_limit", "scale", "shm_size",
    )}
    bool_props = {name: BOOL_STR for name in (
        "attach", "init", "oom_kill_disable", "privileged", "read_only", "stdin_open", "tty", "use_api_socket",
    )}
    return obj({
        **scalar_props, **num_props, **bool_props,
        "annotations": LIST_OR_DICT, "build": _build(), "blkio_config": {"type": "object"},
        "cap_add": UNIQUE_STR_LIST, "cap_drop": UNIQUE_STR_LIST,
        "command": {"oneOf": [{"type": "null"}, STR, STR_LIST]},
        "configs": _service_refs(), "credential_spec": {"type": "object"}, "depends_on": _depends_on(),
        "deploy": {"oneOf": [{"type": "object"}, {"type": "null"}]}, "develop": {"type": "object"},
        "device_cgroup_rules": STR_LIST, "devices": {"type": "array"},
        "dns": STR_OR_LIST, "dns_opt": UNIQUE_STR_LIST, "dns_search": STR_OR_LIST,
        "entrypoint": {"oneOf": [{"type": "null"}, STR, STR_LIST]},
        "env_file": _env_file(), "label_file": STR_OR_LIST, "environment": LIST_OR_DICT,
        "expose": {"type": "array", "items": NUM_STR, "uniqueItems": True},
        "extends": {"oneOf": [STR, obj({"service": STR, "file": STR}, ("service",))]},
        "external_links": UNIQUE_STR_LIST, "extra_hosts": LIST_OR_DICT, "gpus": {"type": ["string", "array"]},
        "group_add": {"type": "array", "items": NUM_STR},
        "healthcheck": _healthcheck(), "labels": LIST_OR_DICT, "links": UNIQUE_STR_LIST,
        "logging": obj({"driver": STR, "options": {"type": "object"}}), "models": {"type": ["object", "array"]},
        "networks": _networks_of_service(), "ports": _ports(),
        "post_start": {"type": "array"}, "pre_stop": {"type": "array"},
        "profiles": UNIQUE_STR_LIST, "provider": {"type": "object"},
        "restart": STR, "secrets": _service_refs(), "security_opt": UNIQUE_STR_LIST,
        "storage_opt": {"type": "object"}, "sysctls": LIST_OR_DICT, "tmpfs": STR_OR_LIST, "ulimits": _ulimits(),
        "volumes": _volumes(), "volumes_from": UNIQUE_STR_LIST,
    })


def _resource(kind: str) -> dict[str, Any]:
    common: dict[str, Any] = {"name": STR, "external": {"oneOf": [BOOL_STR, obj({"name": STR})]},
                              "labels": LIST_OR_DICT}
    if kind == "network":
        common.update({"driver": STR, "driver_opts": {"type": "object"}, "attachable": BOOL_STR,
                       "enable_ipv4": BOOL_STR, "enable_ipv6": BOOL_STR, "internal": BOOL_STR,
                       "ipam": obj({"driver": STR, "config": {"type": "array"}, "options": {"type": "object"}})})
    elif kind == "volume":
        common.update({"driver": STR, "driver_opts": {"type": "object"}})
    else:
        common.update({"file": STR, "environment": STR, "content": STR, "driver": STR,
                       "driver_opts": {"type": "object"}, "template_driver": STR})
    return {"oneOf": [obj(common), {"type": "null"}]}


@cache
def compose_schema() -> dict[str, Any]:
    include_entry = {"oneOf": [STR, obj({
        "path": STR_OR_LIST, "env_file": STR_OR_LIST, "project_directory": STR,
    }, ("path",))]}
    return obj({
        "version": STR, "name": {"type": "string"},
        "include": {"type": "array", "items": include_entry},
        "services": {"oneOf": [dict_of({"oneOf": [_service(), {"type": "null"}]}), {"type": "null"}]},
        "networks": {"oneOf": [dict_of(_resource("network")), {"type": "null"}]},
        "volumes": {"oneOf": [dict_of(_resource("volume")), {"type": "null"}]},
        "secrets": {"oneOf": [dict_of(_resource("secret")), {"type": "null"}]},
        "configs": {"oneOf": [dict_of(_resource("config")), {"type": "null"}]},
        "models": {"type": "object"},
    })


_TYPES = {"string": "a string", "number": "a number", "integer": "a whole number", "boolean": "true or false",
          "array": "a list", "object": "a mapping", "null": "empty"}


def validate(data: dict[str, Any], lines: Lines) -> None:
    """ComposeFileError for the first place (in file order) where `data` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft7Validator(compose_schema())
    errors = list(validator.iter_errors(data))
    if not errors:
        return
    leaves = [_deepest(e) for e in errors]
    path, message = min((_describe(e) for e in leaves), key=lambda pm: (lines.line(pm[0]), -len(pm[0])))
    raise ComposeFileError(message, filename=lines.filename, line=lines.line(path), key=key_text(path))


def _deepest(error: Any) -> Any:
    """For a `oneOf` failure, the alternative that got furthest (the most specific complaint)."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        typed = [e for e in error.context if e.validator != "type" or len(e.absolute_path) > len(error.absolute_path)]
        pool = typed or error.context
        best = max(pool, key=lambda e: len(e.absolute_path))
        if len(best.absolute_path) <= len(error.absolute_path) and best.validator == "type":
            return error
        error = best
    return error


def _describe(error: Any) -> tuple[tuple[str | int, ...], str]:
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        bad = [k for k in extra if not k.startswith("x-")] or extra
        if len(path) == 1 and path[0] in ("services", "networks", "volumes", "secrets", "configs"):
            return (*path, bad[0]), f"invalid name {bad[0]!r}: use letters, digits, '.', '_' and '-'"
        return (*path, bad[0]), f"additional property {bad[0]!r} is not allowed"
    if kind in ("oneOf", "anyOf"):
        wanted = sorted({_TYPES.get(t, t) for e in error.context if e.validator == "type"
                         for t in _as_list(e.validator_value)})
        return path, f"must be {' or '.join(wanted)}" if wanted else "has an invalid form"
    if kind == "type":
        wanted = [_TYPES.get(t, t) for t in _as_list(error.validator_value)]
        return path, f"must be {' or '.join(wanted)}, not {_TYPES.get(_type_of(error.instance), 'that')}"
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return path, f"{missing[0]!r} is required"
    if kind == "enum":
        return path, f"must be one of {', '.join(map(str, error.validator_value))}"
    if kind == "uniqueItems":
        return path, "has duplicate entries"
    return path, error.message


def _as_list(value: Any) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
