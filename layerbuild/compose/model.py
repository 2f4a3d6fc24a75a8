"""The resolved project: its name, directory and the services and resources in long syntax."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Project:
    """A loaded compose project. `services` and the resources are in long syntax, paths absolute,
    values interpolated: what `compose config` prints (`to_dict`)."""

    name: str
    working_dir: Path
    files: tuple[str, ...]
    services: dict[str, dict[str, Any]]
    networks: dict[str, dict[str, Any]]
    volumes: dict[str, dict[str, Any]]
    secrets: dict[str, dict[str, Any]]
    configs: dict[str, dict[str, Any]]
    extensions: dict[str, Any]
    environment: dict[str, str]

    def image_of(self, service: str) -> str:
        """The image a service runs: its `image:`, else `<project>-<service>` (docker compose's name)."""
        return str(self.services[service].get("image") or f"{self.name}-{service}")

    def to_dict(self) -> dict[str, Any]:
        """The model in docker compose's layout: services and maps sorted by key, structures in
        the order of compose-go's types."""
        out: dict[str, Any] = {"name": self.name,
                               "services": {n: _service(s) for n, s in sorted(self.services.items())}}
        for key in ("networks", "volumes", "secrets", "configs"):
            table = getattr(self, key)
            if table:
                out[key] = {n: _ordered(v, RESOURCE_ORDER) for n, v in sorted(table.items())}
        out.update(self.extensions)
        return out

    def service_names(self) -> list[str]:
        return sorted(self.services)

    def with_services(self, names: list[str]) -> Project:
        """The project narrowed to `names` and the services they depend on (`compose config web`)."""
        import dataclasses

        keep: set[str] = set()
        todo = list(names)
        while todo:
            name = todo.pop()
            if name not in keep and name in self.services:
                keep.add(name)
                todo.extend(self.services[name].get("depends_on") or {})
        return dataclasses.replace(self, services={n: s for n, s in self.services.items() if n in keep})


# The fields of compose-go's structures in their order (maps are sorted instead).
BUILD_ORDER = ("context", "dockerfile", "dockerfile_inline", "entitlements", "args", "ssh", "labels", "cache_from",
               "cache_to", "no_cache", "additional_contexts", "network", "pull", "target", "shm_size",
               "extra_hosts", "isolation", "privileged", "secrets", "tags", "ulimits", "platforms")
HEALTH_ORDER = ("test", "timeout", "interval", "retries", "start_period", "start_interval", "disable")
VOLUME_ORDER = ("type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs", "image")
REF_ORDER = ("source", "target", "uid", "gid", "mode")
DEP_ORDER = ("condition", "restart", "required")
RESOURCE_ORDER = ("name", "driver", "driver_opts", "ipam", "external", "internal", "attachable", "enable_ipv6",
                  "labels", "file", "environment", "content")
MAPS = {"environment", "labels", "annotations", "sysctls", "extra_hosts", "networks", "depends_on", "ulimits"}


def _ordered(value: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    known = {k: value[k] for k in order if k in value}
    return {**known, **{k: value[k] for k in sorted(value) if k not in known}}


def _service(service: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(service):
        value = service[key]
        if key in MAPS and isinstance(value, dict):
            value = {k: value[k] for k in sorted(value)}
            if key == "depends_on":
                value = {k: _ordered(v, DEP_ORDER) for k, v in value.items()}
        elif key == "build":
            value = _ordered(value, BUILD_ORDER)
            for sub in ("args", "labels", "additional_contexts", "ssh"):
                if isinstance(value.get(sub), dict):
                    value[sub] = {k: value[sub][k] for k in sorted(value[sub])}
        elif key == "healthcheck":
            value = _ordered(value, HEALTH_ORDER)
        elif key == "volumes":
            value = [_ordered(v, VOLUME_ORDER) for v in value]
        elif key in ("secrets", "configs"):
            value = [_ordered(_file_ref(v, key), REF_ORDER) for v in value]
        out[key] = value
    return out


def _file_ref(ref: dict[str, Any], kind: str) -> dict[str, Any]:
    """A service's secret or config as docker compose prints it: a secret's target defaults to
    /run/secrets/<source> (a config's has no default), and a mode is an octal string ("0440"), as
    compose-go's FileMode marshals itself in YAML and in JSON."""
    out = dict(ref)
    if kind == "secrets" and "target" not in out:
        out["target"] = f"/run/secrets/{out['source']}"
    if isinstance(out.get("mode"), int) and not isinstance(out["mode"], bool):
        out["mode"] = f"0{out['mode']:o}"
    return out
