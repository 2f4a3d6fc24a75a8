"""`ports:` in docker's spellings, published and reached from the host's loopback: a host address,
ranges, long syntax (`target`, `published`, `host_ip`, `protocol`, `mode`), UDP, IPv6 where the host
has ::1; `expose` publishes nothing."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from layerbuild.runtime import containers
from tests.compose.test_up import IMAGE, Project

pytestmark = [pytest.mark.integration]


def _free_run(n: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """The first of `n` consecutive free ports on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + n > 65535:
            continue
        try:
            for i in range(1, n):
                with socket.socket(socket.AF_INET, kind) as t:
                    t.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free ports")


def _get(host: str, port: int) -> str:
    """GET / straight to host:port (no proxy from the environment)."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_every_spelling_of_ports(project: Project) -> None:
    one, rng, long_, udp, pick, v6 = (_free_run(1), _free_run(3), _free_run(1), _free_run(1, socket.SOCK_DGRAM),
                                      _free_run(3), _free_run(1))
    with socket.socket() as taken:  # the first port of the range to pick from is taken: the next one is used
        taken.bind(("127.0.0.1", pick))
        taken.listen(1)
        six = f"      - '[::1]:{v6}:80'\n" if _v6() else ""
        project.write(f"""\
  web:
    image: {IMAGE}
    command: ["sh", "-c", "for p in 8000 8001 8002; do mkdir -p /w$$p; echo $$p > /w$$p/index.html; httpd -p $$p -h /w$$p; done; echo 80 > /www/index.html; exec httpd -f -p 80 -h /www"]
    expose: ["9000", "9001/udp"]
    ports:
      - "127.0.0.1:{one}:80"
      - "{rng}-{rng + 2}:8000-8002"
      - target: 8001
        published: "{long_}"
        host_ip: 127.0.0.1
        protocol: tcp
        mode: host
      - "{udp}:53/udp"
      - "{pick}-{pick + 2}:80"
{six}""")
        code, _, err = project("up", "-d")
        assert code == 0, err
    assert _get("127.0.0.1", one) == "80\n"
    assert [_get("127.0.0.1", rng + i) for i in range(3)] == ["8000\n", "8001\n", "8002\n"]
    assert _get("127.0.0.1", long_) == "8001\n"
    assert _get("127.0.0.1", pick + 1) == "80\n"
    if six:
        assert _get("::1", v6) == "80\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError):
        s.bind(("127.0.0.1", udp))  # the forwarder holds the UDP port
    code, out, _ = project("ps", "--json")
    pubs = json.loads(out)[0]["Publishers"]
    assert {"URL": "127.0.0.1", "TargetPort": 53, "PublishedPort": udp, "Protocol": "udp"} in pubs
    assert {"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": pick + 1, "Protocol": "tcp"} in pubs
    assert len(pubs) == 7 + bool(six) and not [p for p in pubs if p["TargetPort"] in (9000, 9001)]
    code, out, _ = project("config", "--format", "json")
    assert json.loads(out)["services"]["web"]["expose"] == ["9000", "9001/udp"]
    web = containers.find(project.root, f"{project.name}-web-1")
    assert project("down", "-t", "1")[0] == 0
    assert web.name not in [c.name for c in containers.list_all(project.root)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp))  # free again


def test_sctp_is_refused(project: Project) -> None:
    project.write(f"  web: {{image: {IMAGE}, ports: ['9999:80/sctp']}}\n")
    code, _, err = project("up", "-d")
    assert code == 1 and "only tcp and udp ports are published" in err and "Traceback" not in err
