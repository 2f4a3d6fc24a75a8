"""The published ports' forwarder (`runtime/forward.py`) against real servers in a network namespace of
the test's own: TCP and UDP, on IPv4 and IPv6 host addresses, from the host's loopback; and docker's
`-p` spellings with a protocol."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.errors import UsageError
from layerbuild.runtime.ports import Port, parse_publish, start_forwarder, stop_forwarder

pytestmark = [pytest.mark.integration]

# Servers inside the namespace: a TCP one that answers "tcp:" + what it got, a UDP one that answers
# each datagram with "udp:" + it, from the same socket.
SERVERS = r"""
import socket, sys, threading
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("127.0.0.1", 7000)); tcp.listen(8)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 7001))
def serve_tcp():
    while True:
        c, _ = tcp.accept()
        with c:
            c.sendall(b"tcp:" + c.recv(100))
threading.Thread(target=serve_tcp, daemon=True).start()
print("up", flush=True)
while True:
    data, peer = udp.recvfrom(1000)
    udp.sendto(b"udp:" + data, peer)
"""


def _free(family: socket.AddressFamily, kind: socket.SocketKind, host: str) -> int:
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[int]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace of the test's needs root")
    proc = subprocess.Popen(["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {sys.executable} -c '{SERVERS}'"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_tcp_and_udp_on_ipv4_and_ipv6(servers: int, tmp_path: Path) -> None:
    v6 = _has_ipv6_loopback()
    ports = [Port(7000, _free(socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1")),
             Port(7001, _free(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"), protocol="udp")]
    if v6:
        ports += [Port(7000, _free(socket.AF_INET6, socket.SOCK_STREAM, "::1"), "::1"),
                  Port(7001, _free(socket.AF_INET6, socket.SOCK_DGRAM, "::1"), "::1", "udp")]
    pid, start = start_forwarder(ports, netns=Path(f"/proc/{servers}/ns/net"), target_ip="127.0.0.1",
                                 watch_pid=servers, log=tmp_path / "forward.log")
    try:
        for p in ports:
            family = socket.AF_INET6 if ":" in p.host_ip else socket.AF_INET
            if p.protocol == "tcp":
                with socket.create_connection((p.host_ip, p.host_port), timeout=5) as s:
                    s.sendall(b"hello")
                    assert s.recv(100) == b"tcp:hello"
            else:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(5)
                    for n in range(3):  # one flow, several datagrams each way
                        s.sendto(f"ping{n}".encode(), (p.host_ip, p.host_port))
                        data, peer = s.recvfrom(100)
                        assert data == f"udp:ping{n}".encode() and peer[1] == p.host_port
                with socket.socket(family, socket.SOCK_DGRAM) as other:  # a second client, its own flow
                    other.settimeout(5)
                    other.sendto(b"x", (p.host_ip, p.host_port))
                    assert other.recvfrom(100)[0] == b"udp:x"
    finally:
        stop_forwarder(pid, start)
    assert not Path(f"/proc/{pid}").exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # the UDP port is free again
        s.bind(("127.0.0.1", ports[1].host_port))


def test_a_taken_udp_port_is_a_clear_error(servers: int, tmp_path: Path) -> None:
    from layerbuild.runtime.spec import SandboxError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(SandboxError, match=f"cannot publish 127.0.0.1:{port}/udp"):
            start_forwarder([Port(7001, port, protocol="udp")], netns=Path(f"/proc/{servers}/ns/net"),
                            target_ip="127.0.0.1", watch_pid=servers, log=tmp_path / "forward.log")


@pytest.mark.parametrize(("spec", "port"), [
    ("8080:80", Port(80, 8080)),
    ("53:53/udp", Port(53, 53, protocol="udp")),
    ("127.0.0.2:8080:80/tcp", Port(80, 8080, "127.0.0.2")),
    ("[::1]:8080:80/udp", Port(80, 8080, "::1", "udp")),
    ("80", Port(80, 80)),
])
def test_publish_spellings(spec: str, port: Port) -> None:
    assert parse_publish(spec) == port


def test_sctp_is_refused() -> None:
    with pytest.raises(UsageError, match="unsupported protocol in published port"):
        parse_publish("80:80/sctp")
