"""What a service's container is: its name, labels, run options, networks and volumes, from the model.

Containers carry docker compose's labels (`com.docker.compose.project`, `.service`,
`.container-number`, `.oneoff`, `.config-hash`), so a project's containers are found by label from
any shell; its networks are `<project>_<network>` (`name:` when given) and its named volumes
directories under `<root>/volumes/<project>_<volume>/_data`, both kept under the store root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from layerbuild.compose.model import Project
from layerbuild.errors import ComposeFileError
from layerbuild.runtime import bridge, containers, sharedns
from layerbuild.runtime.bridge import Join
from layerbuild.runtime.containers import Container
from layerbuild.runtime.ports import DEFAULT_HOST_IP, Port
from layerbuild.runtime.runner import RunOptions
from layerbuild.runtime.spec import BindMount, TmpfsMount

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
ONEOFF = "com.docker.compose.oneoff"
HASH = "com.docker.compose.config-hash"
VOLUMES = "volumes"
ANONYMOUS = "anonymous.json"  # in an anonymous volume's directory: its project, container and target
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


def volume_name(project: Project, key: str) -> str:
    conf = project.volumes.get(key) or {}
    return str(conf.get("name") or f"{project.name}_{key}")


def volume_dir(root: Path, name: str) -> Path:
    return root / VOLUMES / name / "_data"


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


def _mounts(root: Path, project: Project, svc: dict[str, Any], container: str
            ) -> tuple[tuple[BindMount | TmpfsMount, ...], tuple[tuple[Path, str], ...]]:
    """The service's mounts, and the volumes among them made just now that the image's content at
    their target fills (docker's copy-up; `volume.nocopy` opts out)."""
    out: list[BindMount | TmpfsMount] = []
    fills: list[tuple[Path, str]] = []
    for v in svc.get("volumes") or []:
        kind, target = v.get("type"), v["target"]
        readonly = bool(v.get("read_only"))
        if kind == "tmpfs":
            tmpfs = v.get("tmpfs") or {}
            mode = tmpfs.get("mode")
            out.append(TmpfsMount(target, byte_size(tmpfs.get("size")),
                                  0o1777 if mode is None else int(str(mode), 8) if isinstance(mode, str) else mode))
        elif kind == "bind":
            source = Path(v["source"])
            if not source.exists() and (v.get("bind") or {}).get("create_host_path", True):
                source.mkdir(parents=True, exist_ok=True)
            out.append(BindMount(source, target, readonly=readonly))
        elif kind == "volume":
            source = v.get("source")
            if not source:  # an anonymous volume: this container's own
                path = anonymous_volume(root, project, container, target)
            elif source not in project.volumes:
                raise ComposeFileError(f"service refers to undefined volume {source}",
                                       hint="declare it under the top-level volumes:")
            else:
                path = volume_dir(root, volume_name(project, source))
                if path.exists():  # an existing volume keeps what it holds
                    out.append(BindMount(path, target, readonly=readonly))
                    continue
                path.mkdir(parents=True, exist_ok=True)
            if not (v.get("volume") or {}).get("nocopy"):
                fills.append((path, target))
            out.append(BindMount(path, target, readonly=readonly))
        else:
            raise ComposeFileError(f"volume type {kind} is not supported", hint="use volume, bind or tmpfs")
    for item in svc.get("tmpfs") or []:
        target, _, options = str(item).partition(":")
        size, mode = None, 0o1777
        for option in (o for o in options.split(",") if o):
            key, _, value = option.partition("=")
            if key == "size":
                size = byte_size(value)
            elif key == "mode":
                mode = int(value, 8)
        out.append(TmpfsMount(target, size, mode))
    out.extend(_file_mounts(root, project, svc, container))
    return tuple(out), tuple(fills)


FILES = "files"  # under <root>/compose/<project>/: the secrets' and configs' copies, per container


def files_dir(root: Path, project: str, container: str) -> Path:
    return root / "compose" / project / FILES / container


def _file_mounts(root: Path, project: Project, svc: dict[str, Any], container: str) -> list[BindMount]:
    """The service's `secrets:` (at /run/secrets/<name> unless `target` says otherwise) and `configs:`
    (at /<name>), read-only. A `file:` source without uid, gid or mode is bound as it is, as docker
    compose binds it; anything else (`environment:`, `content:`, or ownership and mode asked) is a
    copy made for this container with them (default: root, 0444)."""
    out = []
    for kind in ("secrets", "configs"):
        table = project.secrets if kind == "secrets" else project.configs
        for ref in svc.get(kind) or []:
            name = str(ref["source"])
            spec = table.get(name) or {}
            target = str(ref.get("target") or name)
            if not target.startswith("/"):
                target = f"/run/secrets/{target}" if kind == "secrets" else f"/{target}"
            what = f"{kind[:-1]} {name}"
            if spec.get("external"):
                raise ComposeFileError(f"{what} is external: external {kind} need a swarm",
                                       hint="give it a file:, environment: or content: source")
            custom = any(ref.get(k) is not None for k in ("uid", "gid", "mode"))
            if "file" in spec:
                source = Path(spec["file"])
                if not source.exists():
                    raise ComposeFileError(f"{what}: the file {source} does not exist")
                if not custom:
                    out.append(BindMount(source, target, readonly=True))
                    continue
                data = source.read_bytes()
            elif "environment" in spec:
                value = project.environment.get(str(spec["environment"]))
                if value is None:
                    raise ComposeFileError(f"{what}: the environment variable {spec['environment']} is not set")
                data = value.encode()
            elif "content" in spec and kind == "configs":
                data = str(spec["content"]).encode()
            else:
                raise ComposeFileError(f"{what} has no source", hint="give it a file: or environment: source")
            mode = ref.get("mode")
            mode = 0o444 if mode is None else int(mode, 8) if isinstance(mode, str) else int(mode)
            copy = files_dir(root, project.name, container) / kind / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(copy.name + ".tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, mode)
            _chown(tmp, int(ref.get("uid") or 0), int(ref.get("gid") or 0))
            os.replace(tmp, copy)
            out.append(BindMount(copy, target, readonly=True))
    return out


def _chown(path: Path, uid: int, gid: int) -> None:
    """Owned by uid:gid as the container sees them (rootless: through the user namespace's mapping)."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    elif uid or gid:
        from layerbuild.store import idmap

        idmap.call_in_userns(os.chown, os.fspath(path), uid, gid)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def byte_size(value: Any) -> int | None:
    """A compose size (`64m`, `1gb`, `1024`: bytes) in bytes."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(str(value).strip())
    if m is None:
        raise ComposeFileError(f"invalid size {value!r}", hint="write e.g. 64m, 1g or a number of bytes")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))


def anonymous_volume(root: Path, project: Project, container: str, target: str) -> Path:
    """A new anonymous volume for `container` at `target`: `<root>/volumes/<random id>/_data`, with a
    record of whose it is (so `down -v` and `run --rm` find it)."""
    import secrets

    vdir = root / VOLUMES / secrets.token_hex(32)
    (vdir / "_data").mkdir(parents=True)
    _write_json(vdir / ANONYMOUS, {PROJECT: project.name, "container": container, "target": target})
    return vdir / "_data"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def remove_anonymous(root: Path, project: str, container: str | None = None) -> list[str]:
    """Remove the project's anonymous volumes (only `container`'s, if given); their ids."""
    removed = []
    try:
        entries = list(os.scandir(root / VOLUMES))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            meta = json.loads(Path(entry.path, ANONYMOUS).read_text())
        except (OSError, ValueError):
            continue
        if meta.get(PROJECT) == project and container in (None, meta.get("container")):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.name)
    return removed


def _ports(svc: dict[str, Any]) -> tuple[Port, ...]:
    """The service's published ports (long syntax, one entry per port): tcp and udp, on `host_ip`
    (127.0.0.1 unless given); a published range for one target takes its first free port, as docker's
    does; no published port publishes the target's own number."""
    out = []
    for p in svc.get("ports") or []:
        protocol = str(p.get("protocol") or "tcp")
        if protocol not in ("tcp", "udp"):
            raise ComposeFileError(f"port {p.get('target')}/{protocol}: only tcp and udp ports are published")
        host_ip = str(p.get("host_ip") or DEFAULT_HOST_IP)
        published = str(p.get("published") or p["target"])
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
    mounts, fills = _mounts(root, project, svc, name)
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


def remove_volumes(root: Path, project: Project) -> list[str]:
    removed = []
    for key, conf in project.volumes.items():
        if (conf or {}).get("external"):
            continue
        path = root / VOLUMES / volume_name(project, key)
        if path.exists():
            shutil.rmtree(path)
            removed.append(volume_name(project, key))
    return removed + remove_anonymous(root, project.name)


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
