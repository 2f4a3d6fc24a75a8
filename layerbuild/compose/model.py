"""The resolved project: its name, directory and the services and resources in long syntax."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
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
        out: dict[str, Any] = {"name": self.name,
                               "services": {n: _sorted(s) for n, s in sorted(self.services.items())}}
        for key in ("networks", "volumes", "secrets", "configs"):
            table = getattr(self, key)
            if table:
                out[key] = {n: v for n, v in sorted(table.items())}
        out.update(self.extensions)
        return out

    def service_names(self) -> list[str]:
        return sorted(self.services)

    def view(self) -> MappingProxyType[str, Any]:
        return MappingProxyType(self.to_dict())


def _sorted(service: dict[str, Any]) -> dict[str, Any]:
    return {k: service[k] for k in sorted(service)}
