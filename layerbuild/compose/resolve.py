"""The merged model completed into a project: profiles applied, dependencies (implicit ones too)
checked for cycles and undefined services, the default network, resource names, `env_file` values
read into `environment`, and every reference to a network, volume, secret or config checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layerbuild.compose.dotenv import read_env_file
from layerbuild.compose.model import Project
from layerbuild.errors import ComposeFileError


def shown_name(path: Path, cwd: Path) -> str:
    """A file named as the user would: relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def implicit_dependencies(svc: dict[str, Any]) -> dict[str, Any]:
    """`links`, `volumes_from` and `network_mode: service:X` make a service depend on another (compose-go)."""
    wanted = [str(link).split(":", 1)[0] for link in svc.get("links", [])]
    wanted += [str(v).split(":", 1)[0] for v in svc.get("volumes_from", []) if not str(v).startswith("container:")]
    mode = str(svc.get("network_mode", ""))
    if mode.startswith("service:"):
        wanted.append(mode.removeprefix("service:"))
    if not wanted:
        return svc
    deps = dict(svc.get("depends_on") or {})
    for name in wanted:
        deps.setdefault(name, {"condition": "service_started", "required": True})
    return {**svc, "depends_on": deps}


def check_cycles(services: Mapping[str, Any], origin: Mapping[str, Any]) -> None:
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = trail[trail.index(name):] + (name,)
            lines, path = origin[cycle[0]]
            raise ComposeFileError(f"dependency cycle detected: {' -> '.join(cycle)}", filename=lines.filename,
                                   line=lines.line((*path, "depends_on")), key=f"services.{cycle[0]}.depends_on")
        state[name] = 1
        for dep in (services[name].get("depends_on") or {}):
            if dep in services and dep != name:
                visit(dep, (*trail, name))
        state[name] = 2

    for name in sorted(services):
        visit(name, ())


def active_services(services: dict[str, Any], profiles: set[str], origin: Mapping[str, Any],
            named: set[str]) -> dict[str, Any]:
    """The services that the enabled profiles (and services without profiles, and those `named`
    on the command line) leave in the model."""
    def on(name: str, svc: dict[str, Any]) -> bool:
        own = svc.get("profiles") or []
        return not own or name in named or "*" in profiles or bool(profiles & set(own))

    active = {n: dict(s) for n, s in services.items() if on(n, s)}
    for name, svc in active.items():
        deps = svc.get("depends_on") or {}
        for dep, spec in list(deps.items()):
            if dep in active:
                continue
            if dep in services and not spec.get("required", True):
                del deps[dep]
                continue
            lines, path = origin[name]
            why = "is not enabled by the active profiles" if dep in services else "is not defined"
            raise ComposeFileError(f"depends on service {dep!r}, which {why}", filename=lines.filename,
                                   line=lines.line((*path, "depends_on")), key=f"services.{name}.depends_on",
                                   hint="enable its profile with --profile" if dep in services else None)
    return active


def complete(name: str, project_dir: Path, files: list[Path], model: dict[str, Any], services: dict[str, Any],
              env: Mapping[str, str], origin: Mapping[str, Any], cwd: Path) -> Project:
    """Names, default network, env_file resolved into environment, references checked."""
    networks = {k: dict(v or {}) for k, v in model["networks"].items()}
    for svc_name, svc in services.items():
        lines, path = origin[svc_name]
        if "network_mode" not in svc:
            svc["networks"] = svc.get("networks") or {"default": None}
        for net in svc.get("networks", {}):
            if net == "default":
                networks.setdefault("default", {})
            elif net not in networks:
                raise ComposeFileError(f"service {svc_name!r} refers to undefined network {net!r}",
                                       filename=lines.filename, line=lines.line((*path, "networks")),
                                       key=f"services.{svc_name}.networks")
        for vol in svc.get("volumes", []):
            if vol.get("type") == "volume" and vol.get("source") and vol["source"] not in model["volumes"]:
                raise ComposeFileError(f"service {svc_name!r} refers to undefined volume {vol['source']!r}",
                                       filename=lines.filename, line=lines.line((*path, "volumes")),
                                       key=f"services.{svc_name}.volumes",
                                       hint="declare it under the top-level volumes: key")
        for kind in ("secrets", "configs"):
            for ref in svc.get(kind, []) + (svc.get("build", {}).get("secrets", []) if kind == "secrets" else []):
                if ref["source"] not in model[kind]:
                    raise ComposeFileError(f"service {svc_name!r} refers to undefined {kind[:-1]} {ref['source']!r}",
                                           filename=lines.filename, line=lines.line((*path, kind)),
                                           key=f"services.{svc_name}.{kind}")
        for dep in svc.get("depends_on", {}):
            if dep == svc_name:
                raise ComposeFileError(f"dependency cycle detected: {svc_name} -> {svc_name}", filename=lines.filename,
                                       line=lines.line((*path, "depends_on")), key=f"services.{svc_name}.depends_on")
        if "env_file" in svc:
            values: dict[str, str | None] = {}
            for item in svc.pop("env_file"):
                file = Path(item["path"])
                if not file.is_file() and not item["required"]:
                    continue
                values.update(read_env_file(file, shown_name(file, cwd), env.get))
            values.update(svc.get("environment", {}))
            svc["environment"] = values
    for kind in ("networks", "volumes"):
        table = networks if kind == "networks" else {k: dict(v or {}) for k, v in model["volumes"].items()}
        for key, spec in table.items():
            ext = spec.get("external")
            if isinstance(ext, dict):  # the old `external: {name: N}` form
                spec["name"], spec["external"] = ext.get("name", key), True
            elif ext in (True, "true"):
                spec["external"] = True
                spec.setdefault("name", key)
            spec.setdefault("name", f"{name}_{key}")
            table[key] = {"name": spec.pop("name"), **spec}
        model[kind] = table
    for kind in ("secrets", "configs"):
        resolved = {}
        for key, spec in model[kind].items():
            spec = dict(spec or {})
            external = spec.get("external") in (True, "true")
            default = key if external else f"{name}_{key}"
            resolved[key] = {"name": spec.pop("name", default), **spec}
        model[kind] = resolved
    extensions = {k: v for k, v in model.items() if k.startswith("x-")}
    return Project(name=name, working_dir=project_dir, files=tuple(str(f) for f in files), services=services,
                   networks=model["networks"], volumes=model["volumes"], secrets=model["secrets"],
                   configs=model["configs"], extensions=extensions, environment=dict(env))
