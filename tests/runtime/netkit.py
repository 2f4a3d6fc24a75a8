"""Network peers for sandbox tests: a host address that is not loopback, TCP servers, a DNS responder.

Everything lives on this machine: a veth pair into a network namespace of the test's, with a host
address from 198.18.0.0/15 (reserved for benchmarking, never routed to the internet), and servers on
it or on the host's loopback.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Server:
    """A TCP server that answers every connection with `token` and counts them."""

    host: str
    port: int
    token: str
    connections: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@contextlib.contextmanager
def tcp_server(host: str) -> Iterator[Server]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(16)
    server = Server(host, sock.getsockname()[1], f"token-{random.getrandbits(48):012x}")

    def serve() -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            with conn:
                server.connections.append(peer[0])
                conn.sendall(server.token.encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread.join(5)


@contextlib.contextmanager
def outside_address() -> Iterator[str]:
    """A non-loopback address of the host: one end of a veth pair whose other end is in a network
    namespace made for the test (root only). Both are removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making a veth pair needs root and iproute2")
    tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
    name, peer, netns = f"lbh{tag}"[:15], f"lbp{tag}"[:15], f"lbnet{tag}"
    address = f"198.18.{random.randrange(1, 255)}.{random.randrange(0, 64) * 4}"
    host_ip = address[: address.rindex(".") + 1] + str(int(address.rsplit(".", 1)[1]) + 1)
    made = subprocess.run(["ip", "netns", "add", netns], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {made.stderr.strip()}")
    try:
        for cmd in (["ip", "link", "add", name, "type", "veth", "peer", "name", peer],
                    ["ip", "link", "set", peer, "netns", netns],
                    ["ip", "addr", "add", f"{host_ip}/30", "dev", name],
                    ["ip", "link", "set", name, "up"],
                    ["ip", "-n", netns, "link", "set", peer, "up"]):
            subprocess.run(cmd, check=True, capture_output=True)
        yield host_ip
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


def loopback_address() -> str:
    """An address of the host's 127.0.0.0/8 that nothing else is likely to use."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.{random.randrange(2, 254)}"


@contextlib.contextmanager
def dns_server(host: str, names: dict[str, str]) -> Iterator[list[str]]:
    """A DNS responder on host:53 (UDP) answering A queries for `names`; yields the names asked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 53))
    asked: list[str] = []

    sock.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError, ValueError, IndexError, struct.error):
                sock.sendto(_answer(data, names, asked), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield asked
    finally:
        done.set()
        thread.join(5)
        sock.close()


def _answer(query: bytes, names: dict[str, str], asked: list[str]) -> bytes:
    ident = query[:2]
    labels, pos = [], 12
    while query[pos]:
        labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
        pos += 1 + query[pos]
    qtype = struct.unpack("!H", query[pos + 1 : pos + 3])[0]
    question = query[12 : pos + 5]
    name = ".".join(labels).lower()
    asked.append(name)
    if name not in names:
        return ident + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + question  # NXDOMAIN
    if qtype != 1:
        return ident + struct.pack("!HHHHH", 0x8180, 1, 0, 0, 0) + question  # no record of that type
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(names[name])
    return ident + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + record


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone(pids: list[int], within: float = 10.0) -> bool:
    """Whether all `pids` end within `within` seconds: a killed process finishes its exit (and its
    parent's or init's reaping) asynchronously."""
    deadline = time.monotonic() + within
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _processes() -> dict[int, tuple[int, str]]:
    """Every live (not zombie) process: pid -> (parent pid, command name)."""
    out: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            out[int(entry)] = (int(fields[1]), stat[stat.index("(") + 1 : stat.rindex(")")])
    return out


def children_named(ppid: int, name: str) -> list[int]:
    """The live child processes of `ppid` whose command is `name`."""
    return [pid for pid, (parent, comm) in _processes().items() if parent == ppid and comm == name]


def descendants(pid: int) -> dict[int, str]:
    """The live descendants of `pid`, with their command names."""
    parents = _processes()
    out: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in parents.items() if ppid in frontier and p not in out}
        out.update({p: parents[p][1] for p in frontier})
    return out


def probe(*servers: Server) -> str:
    """A shell script that tries each server and prints `HOST:PORT answer` lines."""
    lines = [f'echo "{s.target} $(nc -w 2 {s.host} {s.port} </dev/null 2>&1 | tr "\\n" " ")"' for s in servers]
    return "; ".join(lines)


def reached(output: str, server: Server, host: str | None = None) -> bool:
    """Whether the probe's output shows `server` (tried as `host`, default its own) answering."""
    for line in output.splitlines():
        target, _, answer = line.partition(" ")
        if target == f"{host or server.host}:{server.port}":
            return server.token in answer
    raise AssertionError(f"{host or server.host}:{server.port} was not probed:\n{output}")
