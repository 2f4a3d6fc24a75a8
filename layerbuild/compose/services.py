"""What a service's container is: its name, labels, run options, networks and volumes, from the model.

Containers carry docker compose's labels (`com.docker.compose.project`, `.service`,
`.container-number`, `.oneoff`, `.config-hash`), so a project's containers are found by label from
any shell; its networks are `<project>_<network>` (`name:` when given); its volumes, tmpfs mounts, secrets and
configs are `mounts.py`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from layerbuild.compose.model import Project
from layerbuild.compose.mounts import service_mounts
from layerbuild.errors import ComposeFileError
from layerbuild.runtime import bridge, containers, sharedns
from layerbuild.runtime.bridge import Join
from layerbuild.runtime.containers import Container
from layerbuild.runtime.ports import DEFAULT_HOST_IP, Port
from layerbuild.runtime.runner import RunOptions

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
ONEOFF = "com.docker.compose.oneoff"
HASH = "com.docker.compose.config-hash"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def duration(value: Any, default: float) -> float:
    """A compose duration (`1m30s`, `500ms`, `10`: seconds) in seconds."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ComposeFileError(f"invalid duration {text!r}", hint="write e.g. 30s, 1m30s or 500ms")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def container_name(project: Project, service: str, number: int = 1) -> str:
    return str(project.services[service].get("container_name") or f"{project.name}-{service}-{number}")


def scale_of(project: Project, service: str) -> int:
    """How many containers the service runs: `scale:`, else `deploy.replicas`, else 1."""
    svc = project.services[service]
    value = svc.get("scale")
    if value is None:
        value = (svc.get("deploy") or {}).get("replicas")
    count = 1 if value is None else int(value)
    if count > 1 and svc.get("container_name"):
        raise ComposeFileError(f"service {service} has container_name {svc['container_name']!r}: it cannot "
                               f"run {count} containers, each needs a name of its own",
                               hint="remove container_name: to scale the service")
    return count


def with_scale(project: Project, scale: dict[str, int]) -> Project:
    """The project with `up --scale SERVICE=N` applied (as `scale:` of those services)."""
    if not scale:
        return project
    import dataclasses

    services = {n: ({**s, "scale": scale[n]} if n in scale else s) for n, s in project.services.items()}
    return dataclasses.replace(project, services=services)


def number_of(c: Container) -> int:
    try:
        return int((c.config.get("labels") or {}).get(NUMBER, 1))
    except ValueError:
        return 1


def service_networks(project: Project, service: str) -> dict[str, dict[str, Any]]:
    """The service's networks (the project's `default` when it names none), `network_mode` aside."""
    svc = project.services[service]
    if svc.get("network_mode"):
        return {}
    nets = svc.get("networks")
    if not nets:
        return {"default": {}}
    if isinstance(nets, list):
        return {n: {} for n in nets}
    order = sorted(nets, key=lambda n: (-(nets[n] or {}).get("priority", 0), n))
    return {n: nets[n] or {} for n in order}


def network_name(project: Project, key: str) -> str:
    conf = project.networks.get(key) or {}
    return str(conf.get("name") or f"{project.name}_{key}")


def shared(project: Project, services: list[str]) -> bool:
    """Whether the services' networks fall back to the project's shared namespace (sharedns.py)."""
    return any(service_networks(project, s) for s in services) and sharedns.wanted()


def ensure_networks(root: Path, project: Project, services: list[str]) -> None:
    """Make the services' project networks (or, where bridges cannot be made, the shared namespace)."""
    wanted = {k for s in services for k in service_networks(project, s)}
    for key in sorted(wanted):
        if key != "default" and key not in project.networks:
            raise ComposeFileError(f"service refers to undefined network {key}",
                                   hint="declare it under the top-level networks:")
    if wanted and sharedns.wanted():
        sharedns.ensure(root, project.name)
        return
    if wanted:
        bridge.require_root()
    for key in sorted(wanted):
        conf = project.networks.get(key) or {}
        if conf.get("external"):
            bridge.find(root, network_name(project, key))
            continue
        subnet = None
        for item in ((conf.get("ipam") or {}).get("config") or []):
            subnet = subnet or item.get("subnet")
        bridge.create(root, network_name(project, key), subnet=subnet, exist_ok=True,
                      labels={PROJECT: project.name, "com.docker.compose.network": key})


def config_hash(project: Project, service: str) -> str:
    """What the container was made from: a change recreates it on the next `up` (its scale aside:
    scaling adds or removes containers and leaves the others be, as docker compose does)."""
    svc = {k: v for k, v in project.services[service].items() if k != "scale"}
    if isinstance(svc.get("deploy"), dict):
        svc["deploy"] = {k: v for k, v in svc["deploy"].items() if k != "replicas"}
    data = json.dumps(svc, sort_keys=True, default=str)
    return hashlib.sha256(data.encode()).hexdigest()


def _ports(svc: dict[str, Any]) -> tuple[Port, ...]:
    """The service's published ports (long syntax, one entry per port): tcp and udp, on `host_ip`
    (127.0.0.1 unless given); a published range for one target takes its first free port, as docker's
    does; without a published port, the kernel picks one (host port 0 here), as docker's does."""
    out = []
    for p in svc.get("ports") or []:
        protocol = str(p.get("protocol") or "tcp")
        if protocol not in ("tcp", "udp"):
            raise ComposeFileError(f"port {p.get('target')}/{protocol}: only tcp and udp ports are published")
        host_ip = str(p.get("host_ip") or DEFAULT_HOST_IP)
        if p.get("published") in (None, ""):
            out.append(Port(int(p["target"]), 0, host_ip, protocol))
            continue
        published = str(p["published"])
        first, _, last = published.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ComposeFileError(f"invalid published port {published!r}", hint="write a port or a range 8000-8010")
        host = int(first)
        if last and last != first:
            host = next((n for n in range(int(first), int(last) + 1) if _free(host_ip, n, protocol)), int(first))
        out.append(Port(int(p["target"]), host, host_ip, protocol))
    return tuple(out)


def _free(host_ip: str, port: int, protocol: str) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM) as s:
        try:
            s.bind((host_ip, port))
        except OSError:
            return False
    return True


def _env(svc: dict[str, Any]) -> tuple[str, ...]:
    env = svc.get("environment") or {}
    return tuple(f"{k}={v}" if v is not None else k for k, v in env.items())


def run_options(root: Path, project: Project, service: str, *, name: str, labels: dict[str, str],
                command: tuple[str, ...] | None = None, detach: bool = True, remove: bool = False,
                publish: bool = True) -> RunOptions:
    svc = project.services[service]
    mode = svc.get("network_mode")
    if mode not in (None, "host", "none", "bridge"):
        raise ComposeFileError(f"network_mode {mode} is not supported", hint="use host or none, or networks:")
    nets = service_networks(project, service)
    share = bool(nets) and sharedns.wanted()
    joins = () if share else tuple(Join(network_name(project, key), tuple(conf.get("aliases") or ()))
                                   for key, conf in nets.items())
    aliases = [a for conf in nets.values() for a in conf.get("aliases") or ()] if share else []
    entrypoint = svc.get("entrypoint")
    cmd = command if command else tuple(svc.get("command") or ())
    mounts, fills = service_mounts(root, project, svc, name)
    return RunOptions(
        image=project.image_of(service), command=cmd, name=name, env=_env(svc), workdir=svc.get("working_dir"),
        user=None if svc.get("user") is None else str(svc["user"]),
        network="host" if mode == "host" else "none" if mode == "none" else "default",
        networks=joins, dns_names=(service, *aliases), shared_netns=project.name if share else "",
        ports=_ports(svc) if publish else (),
        mounts=mounts, fill_volumes=fills, detach=detach, remove=remove,
        entrypoint=None if entrypoint is None else tuple(entrypoint), hostname=svc.get("hostname"),
        labels={**(svc.get("labels") or {}), **labels},
        add_hosts=tuple(_extra_hosts(svc)),
    )


def _extra_hosts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    hosts = svc.get("extra_hosts") or {}
    items = hosts.items() if isinstance(hosts, dict) else (str(h).split(":", 1) for h in hosts)
    out = []
    for name, ip in items:
        for one in ip if isinstance(ip, list) else [ip]:
            out.append((str(name), str(one)))
    return out


def project_containers(root: Path, project: str, *, oneoff: bool = False) -> list[Container]:
    """The project's containers (service containers; with `oneoff`, those of `compose run` too)."""
    out = []
    for c in containers.list_all(root):
        labels = c.config.get("labels") or {}
        if labels.get(PROJECT) == project and (oneoff or labels.get(ONEOFF) != "True"):
            out.append(c)
    return sorted(out, key=lambda c: c.name)


def service_of(c: Container) -> str:
    return str((c.config.get("labels") or {}).get(SERVICE, ""))


def health_path(c: Container) -> Path:
    return c.dir / "health.json"


def health(c: Container) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(health_path(c).read_text())
        return data
    except (OSError, ValueError):
        return None


def write_health(c: Container, data: dict[str, Any]) -> None:
    tmp = health_path(c).with_name("health.json.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, health_path(c))
