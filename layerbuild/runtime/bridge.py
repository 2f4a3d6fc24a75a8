"""Project networks: a network namespace holding a Linux bridge, kept under `<root>/networks/<name>/`,
the veth pairs that plug containers into it, and the /etc/hosts of its members kept current.

A network is a directory: `network.json` (name, id, subnet, gateway, labels, created), `netns` (the
namespace, held by a bind mount of its nsfs file, as `ip netns` holds one under /run/netns) and
`members/<container id>.json` (address, names, pid and its start time, the container's hosts file).
Inside the namespace the bridge `br0` has the gateway address; each container that joins gets a veth
pair whose one end (`v<id>`) is a port of the bridge and whose other end is `ethN` in the container's
own namespace, with the next free address of the subnet. Everything is made inside these namespaces:
the host's interfaces, routes and firewall are never touched, and the subnets of two networks may
overlap. Two networks are not routed to each other, so a container on one cannot reach one on the
other unless it joined both. Containers have no route out of a project network (no NAT to the host).

Names resolve through /etc/hosts: every member's file lists every live member of the networks it
joined (its names and aliases at its address there), rewritten in place (the file is bind-mounted)
whenever a container joins or leaves. Making namespaces and veth pairs needs root (CAP_NET_ADMIN in
the host's user namespace); rootless, `create` says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.runtime.network import LOCALHOST
from layerbuild.runtime.spec import SandboxError
from layerbuild.store.layout import flocked, proc_start_time

NETWORKS = "networks"
BRIDGE = "br0"
POOL = ipaddress.ip_network("10.89.0.0/16")  # /24s of it, as podman's default pool; private to each namespace
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
MNT_DETACH = 2


class NetworkNotFoundError(UsageError):
    """No network has the name given."""


class NetworkInUseError(LayerbuildError):
    """A network with running containers on it cannot be removed (exit 1, as docker's)."""


@dataclass(frozen=True)
class NetworkInfo:
    """One project network as `network.json` records it."""

    dir: Path
    name: str
    id: str
    subnet: str
    gateway: str
    created: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def netns(self) -> Path:
        return self.dir / "netns"

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def to_json(self) -> dict[str, Any]:
        """`network ls --json`'s entry (docker's `network inspect` names)."""
        return {"Name": self.name, "Id": self.id, "Driver": "bridge", "Scope": "local", "Created": self.created,
                "IPAM": {"Config": [{"Subnet": self.subnet, "Gateway": self.gateway}]}, "Labels": self.labels}


@dataclass(frozen=True)
class Member:
    """A container on a network: its address there and the names that resolve to it."""

    container: str
    address: str
    names: tuple[str, ...]
    hostname: str
    hosts: str  # the container's /etc/hosts on the host side
    pid: int
    pid_start: int | None

    def alive(self) -> bool:
        return self.pid > 0 and self.pid_start is not None and proc_start_time(self.pid) == self.pid_start


def networks_dir(root: Path) -> Path:
    return root / NETWORKS


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One lock for every network of the store: creation, removal, addresses and hosts files."""
    base = networks_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    with flocked(base / ".lock"):
        yield


def check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise UsageError(f"invalid network name {name!r}, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")


def require_root(what: str = "project networks") -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            f"{what} need root: a bridge and veth pairs need CAP_NET_ADMIN, which a rootless user lacks",
            hint="run as root, or give the services `network_mode: host` (or `none`)")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _ip(netns: str, commands: Sequence[str]) -> None:
    """Run `ip -batch` inside the namespace whose nsfs file is `netns`."""
    nsenter, ip = shutil.which("nsenter"), shutil.which("ip") or "/usr/sbin/ip"
    if nsenter is None or not os.access(ip, os.X_OK):
        raise SandboxError("project networks need the `ip` (iproute2) and `nsenter` (util-linux) commands",
                           hint="apt-get install iproute2 util-linux")
    done = subprocess.run([nsenter, f"--net={netns}", ip, "-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(f"network setup failed: {done.stderr.strip() or done.stdout.strip()}")


def create(root: Path, name: str, *, subnet: str | None = None, labels: dict[str, str] | None = None,
           exist_ok: bool = False) -> NetworkInfo:
    """Make the network `name` (a namespace with a bridge); with `exist_ok` an existing one is returned."""
    check_name(name)
    require_root()
    with _locked(root):
        existing = {n.name: n for n in list_all(root)}
        if name in existing:
            if exist_ok:
                return existing[name]
            raise UsageError(f"network with name {name} already exists", hint="remove it first (network rm)")
        net = _subnet(subnet, [n.subnet for n in existing.values()])
        gateway = str(next(net.hosts()))
        ndir = networks_dir(root) / name
        if ndir.exists():  # what a crash in the middle of a create or remove left
            _teardown(ndir)
        ndir.mkdir()
        (ndir / "members").mkdir()
        netns = ndir / "netns"
        netns.touch()
        try:
            unshare = shutil.which("unshare") or "/usr/bin/unshare"
            done = subprocess.run([unshare, f"--net={netns}", "true"], capture_output=True, text=True)
            if done.returncode != 0:
                raise SandboxError(f"cannot make the namespace of network {name}: {done.stderr.strip()}")
            _ip(os.fspath(netns), ["link set lo up", f"link add {BRIDGE} type bridge",
                                   f"addr add {gateway}/{net.prefixlen} dev {BRIDGE}", f"link set {BRIDGE} up"])
            info = NetworkInfo(ndir, name, os.urandom(32).hex(), str(net), gateway,
                               time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), dict(labels or {}))
            _write_json(ndir / "network.json", {"name": name, "id": info.id, "subnet": info.subnet,
                                                "gateway": gateway, "created": info.created, "labels": info.labels})
        except BaseException:
            _teardown(ndir)
            raise
    return info


def _subnet(asked: str | None, taken: list[str]) -> ipaddress.IPv4Network:
    if asked is not None:
        try:
            net = ipaddress.ip_network(asked, strict=False)
        except ValueError:
            raise UsageError(f"invalid subnet {asked!r}", hint="write it as 10.1.2.0/24") from None
        if not isinstance(net, ipaddress.IPv4Network) or net.num_addresses < 4:
            raise UsageError(f"invalid subnet {asked!r}: an IPv4 network with room for hosts is needed")
        return net
    for candidate in POOL.subnets(new_prefix=24):
        if candidate.network_address.packed[2] and str(candidate) not in taken and isinstance(
                candidate, ipaddress.IPv4Network):
            return candidate
    raise UsageError("no free subnet left in 10.89.0.0/16", hint="remove unused networks (network rm)")


def _teardown(ndir: Path) -> None:
    netns = ndir / "netns"
    if netns.exists():
        libc = ctypes.CDLL(None, use_errno=True)
        while libc.umount2(os.fsencode(netns), MNT_DETACH) == 0:
            pass  # once per bind (a crash between two creates may have stacked two)
    shutil.rmtree(ndir, ignore_errors=True)


def _load(ndir: Path) -> NetworkInfo:
    data = json.loads((ndir / "network.json").read_text())
    return NetworkInfo(ndir, data["name"], data["id"], data["subnet"], data["gateway"], data["created"],
                       data.get("labels", {}))


def list_all(root: Path) -> list[NetworkInfo]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(networks_dir(root)), key=lambda e: e.name):
            if entry.is_dir():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    out.append(_load(Path(entry.path)))
    return out


def find(root: Path, name: str) -> NetworkInfo:
    for info in list_all(root):
        if name in (info.name, info.id) or (len(name) >= 6 and info.id.startswith(name)):
            return info
    raise NetworkNotFoundError(f"network {name} not found", hint="list them with `layerbuild network ls`")


def members(info: NetworkInfo, live_only: bool = True) -> list[Member]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(info.dir / "members"):
            if entry.name.endswith(".json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    d = json.loads(Path(entry.path).read_text())
                    m = Member(d["container"], d["address"], tuple(d["names"]), d["hostname"], d["hosts"],
                               d["pid"], d["pid_start"])
                    if not live_only or m.alive():
                        out.append(m)
    return sorted(out, key=lambda m: ipaddress.ip_address(m.address))


def remove(root: Path, name: str) -> None:
    """Delete the network; refused while a running container is on it."""
    with _locked(root):
        info = find(root, name)
        live = members(info)
        if live:
            raise NetworkInUseError(f"error while removing network: network {info.name} has active endpoints",
                             hint="stop the containers on it first")
        _teardown(info.dir)


@dataclass(frozen=True)
class Join:
    """A container's request to be on a network: the network's name and the names it answers to there."""

    network: str
    aliases: tuple[str, ...] = ()


def attach(root: Path, joins: Sequence[Join], *, container: str, pid: int, names: Sequence[str], hostname: str,
           hosts: Path) -> list[tuple[str, str]]:
    """Plug the network namespace of `pid` into each network of `joins` (eth0, eth1, ... in that order;
    the default route through the first) and rewrite the hosts files of everyone on them. Returns
    (network, address) pairs."""
    out = []
    start = proc_start_time(pid)
    with _locked(root):
        infos = [find(root, j.network) for j in joins]
        for index, (join, info) in enumerate(zip(joins, infos, strict=True)):
            taken = {m.address for m in members(info)} | {info.gateway}
            net = ipaddress.ip_network(info.subnet)
            address = next((str(h) for h in net.hosts() if str(h) not in taken), None)
            if address is None:
                raise SandboxError(f"network {info.name} has no free address left in {info.subnet}")
            host_end, inside = f"v{container[:10]}{index}", f"eth{index}"
            _ip(os.fspath(info.netns), [f"link del {host_end}"] if _has_link(info, host_end) else [])
            _ip(os.fspath(info.netns), [f"link add {host_end} type veth peer name {inside} netns {pid}",
                                        f"link set {host_end} master {BRIDGE}", f"link set {host_end} up"])
            route = [f"route add default via {info.gateway}"] if index == 0 else []
            _ip(f"/proc/{pid}/ns/net", [f"addr add {address}/{info.prefix} dev {inside}",
                                        f"link set {inside} up", *route])
            all_names = list(dict.fromkeys([*names, *join.aliases]))
            _write_json(info.dir / "members" / f"{container}.json",
                        {"container": container, "address": address, "names": all_names, "hostname": hostname,
                         "hosts": os.fspath(hosts), "pid": pid, "pid_start": start})
            out.append((info.name, address))
        _refresh(root)
    return out


def _has_link(info: NetworkInfo, name: str) -> bool:
    """Whether the bridge's namespace still has a port `name` (a restarted container's old pair)."""
    nsenter, ip = shutil.which("nsenter") or "/usr/bin/nsenter", shutil.which("ip") or "/usr/sbin/ip"
    return subprocess.run([nsenter, f"--net={info.netns}", ip, "link", "show", name],
                          capture_output=True).returncode == 0


def leave(root: Path, container: str) -> None:
    """Take `container` off every network it is on (its veth ends went with its namespace) and rewrite
    the hosts files of those left."""
    with _locked(root):
        touched = []
        for info in list_all(root):
            path = info.dir / "members" / f"{container}.json"
            if path.exists():
                path.unlink()
                touched.append(info)
        if touched:
            _refresh(root)


def _refresh(root: Path) -> None:
    """Rewrite the hosts file of every live member of every network from the members of its networks:
    its own names first, then every other member's, once per (address, name)."""
    by_container: dict[str, list[tuple[Member, list[Member]]]] = {}
    for info in list_all(root):
        ms = members(info)
        for m in ms:
            by_container.setdefault(m.container, []).append((m, ms))
    for container, entries in by_container.items():
        mine = entries[0][0]
        lines = [LOCALHOST, f"{mine.address}\t{' '.join(dict.fromkeys([mine.hostname, *mine.names]))}\n"]
        others: dict[str, list[str]] = {}
        for _, ms in entries:
            for m in ms:
                if m.container != container:
                    names = others.setdefault(m.address, [])
                    names.extend(n for n in m.names if n not in names)
        lines += [f"{address}\t{' '.join(names)}\n" for address, names in others.items()]
        with contextlib.suppress(OSError), open(mine.hosts, "r+") as f:  # in place: it is bind-mounted
            f.truncate(0)
            f.write("".join(lines))
