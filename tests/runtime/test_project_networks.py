"""Project networks (`network create`, `run --network NAME`, `-p`, `exec`) with real namespaces,
bridges and veth pairs, on the busybox image: names resolve, networks are apart, ports reach the
host's loopback, and nothing is left once the containers and networks are gone."""

from __future__ import annotations

import os
import secrets
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.runtime import bridge, containers

pytestmark = pytest.mark.integration


def lb(root: Path, *argv: str) -> int:
    return main(["--root", str(root), *argv])


@pytest.fixture
def net(shared_root: Path) -> Iterator[tuple[Path, str]]:
    name = "t" + secrets.token_hex(4)
    assert lb(shared_root, "network", "create", name) == 0
    made: list[str] = []
    yield shared_root, name
    for c in containers.list_all(shared_root):
        if any(j["network"].startswith(name[:1]) and j["network"] in (name, name + "b")
               for j in c.config.get("networks", [])):
            lb(shared_root, "rm", "-f", c.id)
    for n in (name, name + "b", *made):
        if any(i.name == n for i in bridge.list_all(shared_root)):
            lb(shared_root, "network", "rm", n)


def _detached(root: Path, capfd: pytest.CaptureFixture[str], *argv: str) -> str:
    capfd.readouterr()
    assert lb(root, "run", "-d", *argv) == 0
    return capfd.readouterr().out.strip()


SERVE = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


def test_names_and_aliases_resolve_and_hosts_follow(net: tuple[Path, str], capfd: pytest.CaptureFixture[str]) -> None:
    root, name = net
    waiter = _detached(root, capfd, "--name", f"{name}-w", "--network", name, "busybox", "sleep", "60")
    _detached(root, capfd, "--name", f"{name}-web", "--network", name, "--network-alias", "www",
              "-h", "webhost", "busybox", *SERVE)
    capfd.readouterr()
    code = lb(root, "run", "--rm", "--network", name, "busybox", "sh", "-c",
              f"wget -q -O- http://{name}-web/ && wget -q -O- http://www/")
    assert code == 0
    assert capfd.readouterr().out.split() == ["webhost", "webhost"]
    # the container started first sees the later one in its /etc/hosts, rewritten in place
    hosts = (containers.find(root, waiter).dir / "work" / "etc" / "hosts").read_text()
    assert "www" in hosts and f"{name}-web" in hosts
    lb(root, "stop", "-t", "1", f"{name}-web")
    hosts = (containers.find(root, waiter).dir / "work" / "etc" / "hosts").read_text()
    assert "www" not in hosts  # gone with the container


def fetch(root: Path, networks: tuple[str, ...], url: str) -> int:
    # PID 1 ignores the signal timeout(1) sends it: the shell is PID 1 here, wget its child
    return lb(root, "run", "--rm", *networks, "busybox", "sh", "-c", f"timeout 3 wget -q -O- {url}; exit $?")


def test_two_networks_are_apart(net: tuple[Path, str], capfd: pytest.CaptureFixture[str]) -> None:
    root, name = net
    other = name + "b"
    assert lb(root, "network", "create", other) == 0
    web = _detached(root, capfd, "--name", f"{name}-srv", "--network", name, "busybox", *SERVE)
    address = containers.find(root, web).addresses[name]
    capfd.readouterr()
    # by address, since its name is not even known there
    assert fetch(root, ("--network", other), f"http://{address}/") != 0
    assert fetch(root, ("--network", other), f"http://{name}-srv/") != 0
    # on both: reached
    assert fetch(root, ("--network", other, "--network", name), f"http://{name}-srv/") == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_published_port_on_the_loopback_and_exec(net: tuple[Path, str], capfd: pytest.CaptureFixture[str]) -> None:
    root, name = net
    port = _free_port()
    cid = _detached(root, capfd, "--name", f"{name}-pub", "--network", name, "-p", f"{port}:80", "-h", "pubhost",
                    "busybox", *SERVE)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert resp.read() == b"pubhost\n"
    c = containers.find(root, cid)
    assert c.forwarder_pid and Path(f"/proc/{c.forwarder_pid}").exists()
    capfd.readouterr()
    assert lb(root, "exec", "-w", "/www", f"{name}-pub", "sh", "-c", "cat index.html; exit 3") == 3
    assert capfd.readouterr().out == "pubhost\n"
    assert lb(root, "stop", "-t", "1", cid) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    assert not Path(f"/proc/{c.forwarder_pid}/exe").exists() or containers.find(root, cid).forwarder_pid == 0


def test_network_rm_refuses_active_endpoints_and_leaves_no_mount(net: tuple[Path, str],
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    root, name = net
    cid = _detached(root, capfd, "--network", name, "busybox", "sleep", "60")
    capfd.readouterr()
    assert lb(root, "network", "rm", name) == 1
    assert "active endpoints" in capfd.readouterr().err
    lb(root, "rm", "-f", cid)
    netns = bridge.find(root, name).netns
    assert str(netns) in Path("/proc/self/mountinfo").read_text()
    assert lb(root, "network", "rm", name) == 0
    assert str(netns) not in Path("/proc/self/mountinfo").read_text()
    assert not netns.parent.exists()


def test_bad_network_input_is_a_clear_error(shared_root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert lb(shared_root, "run", "--rm", "--network", "nosuchnet", "busybox", "true") == 125
    assert "network nosuchnet not found" in capfd.readouterr().err
    assert lb(shared_root, "run", "--rm", "-p", "80", "busybox", "true") == 125
    assert "need a network" in capfd.readouterr().err
    assert lb(shared_root, "network", "create", "bad name") == 2
    assert "invalid network name" in capfd.readouterr().err


def test_rootless_is_refused_with_the_reason(shared_root: Path, monkeypatch: pytest.MonkeyPatch,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert lb(shared_root, "network", "create", "rootlessnet") == 125
    err = capfd.readouterr().err
    assert "project networks need root" in err and "CAP_NET_ADMIN" in err
    assert not any(i.name == "rootlessnet" for i in bridge.list_all(shared_root))
