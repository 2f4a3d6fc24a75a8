"""Published ports (`-p`, compose `ports:`): docker's spellings parsed, and the forwarder process
(`forward.py`) started and stopped with the container."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import UsageError
from layerbuild.runtime.spec import SandboxError, start_detached
from layerbuild.store.layout import proc_start_time

FORWARD = Path(__file__).with_name("forward.py")
DEFAULT_HOST_IP = "127.0.0.1"  # never every interface unless asked: a published port is the host's own


@dataclass(frozen=True)
class Port:
    """One published port: `host_ip:host_port` on the host to `container_port` in the container."""

    container_port: int
    host_port: int
    host_ip: str = DEFAULT_HOST_IP
    protocol: str = "tcp"

    def to_json(self) -> dict[str, object]:
        """docker compose's `Publishers` entry."""
        return {"URL": self.host_ip, "TargetPort": self.container_port, "PublishedPort": self.host_port,
                "Protocol": self.protocol}


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid {what} {text!r} in a published port", hint="ports are 1 to 65535")
    return int(text)


def parse_publish(spec: str) -> Port:
    """docker's `-p [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]`; without a host port, one the kernel picks
    (host port 0 here), as docker's."""
    body, _, proto = spec.partition("/")
    if proto not in ("", "tcp", "udp"):
        raise UsageError(f"unsupported protocol in published port {spec!r}", hint="tcp and udp ports are published")
    port = _parse_body(body, spec)
    return Port(port.container_port, port.host_port, port.host_ip, proto or "tcp")


def _parse_body(body: str, spec: str) -> Port:
    if body.startswith("["):  # [IPv6]:HOST:CONTAINER
        ip, _, rest = body[1:].partition("]")
        parts = [ip, *rest.lstrip(":").split(":")]
    else:
        parts = body.split(":")
    if len(parts) == 1:
        return Port(_port(parts[0], "container port"), 0)
    if len(parts) == 2:
        return Port(_port(parts[1], "container port"), _port(parts[0], "host port"))
    if len(parts) == 3:
        host = _port(parts[1], "host port") if parts[1] else 0
        return Port(_port(parts[2], "container port"), host, parts[0] or DEFAULT_HOST_IP)
    raise UsageError(f"invalid published port {spec!r}", hint="write [IP:]HOST_PORT:CONTAINER_PORT")


def start_forwarder(ports: list[Port], *, netns: Path, target_ip: str, watch_pid: int, log: Path,
                    userns: Path | None = None) -> tuple[int, int, list[Port]]:
    """Start the forwarder for `ports`; returns its pid, its start time and the ports as bound (a host
    port 0 replaced by the one the kernel picked, as docker publishes an ephemeral port) once it
    listens, or SandboxError."""
    proc, status_r = start_detached(FORWARD, {
        "netns": os.fspath(netns), "userns": os.fspath(userns) if userns else None,
        "watch_pid": watch_pid, "watch_start": proc_start_time(watch_pid),
        "ports": [{"host_ip": p.host_ip, "host_port": p.host_port, "target_ip": target_ip,
                   "target_port": p.container_port, "protocol": p.protocol} for p in ports]}, log)
    with os.fdopen(status_r, "rb") as f:
        line = f.readline().decode("utf-8", "replace").strip()
    word, _, rest = line.partition(" ")
    if word != "ready":
        proc.wait()
        raise SandboxError(line.removeprefix("error ") or "the port forwarder did not start",
                           hint="pick another host port, or stop what listens there")
    start = proc_start_time(proc.pid)
    # Not waited for here: it outlives us; reaped by init once we are gone, or by a later wait below.
    proc.returncode = 0  # Popen's finaliser must not warn about a child it thinks still runs
    bound = [int(n) for n in rest.split()]
    return proc.pid, start or 0, [Port(p.container_port, n, p.host_ip, p.protocol) for p, n in zip(ports, bound,
                                                                                                 strict=True)]


def stop_forwarder(pid: int, start: int | None) -> None:
    if pid > 0 and start is not None and proc_start_time(pid) == start:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)  # our child when this process started it: no zombie left
