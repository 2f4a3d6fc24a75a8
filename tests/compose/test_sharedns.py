"""The shared-namespace fallback of project networks (`runtime/sharedns.py`), forced here with
LAYERBUILD_NETWORK_BACKEND=shared as the tests run as root: a client reaches a server by its service
name, a published port answers on the host's loopback, the fallback is said once, and `down` leaves
no holder, process, mount or namespace behind."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from layerbuild.runtime import containers, sharedns
from tests.compose.test_up import FORWARDER, WEB, Project, _free_port, _leftovers

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def shared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sharedns.BACKEND_ENV, "shared")


@pytest.mark.slow
def test_services_share_one_namespace_and_reach_each_other_by_name(project: Project) -> None:
    port = _free_port()
    project.write(WEB + f"    ports: ['{port}:80']\n    networks: [back]\n" + """\
  client:
    image: lbtest/busybox:compose
    command: ["sh", "-c", "sleep 60"]
    networks:
      back: {aliases: [cli]}
""", "networks:\n  back: {}\n")
    code, _, err = project("up", "-d")
    assert code == 0, err
    assert err.count(sharedns.NOTICE) == 1  # said once
    holder = sharedns.find(project.root, project.name)
    assert holder is not None
    web = containers.find(project.root, f"{project.name}-web-1")
    client = containers.find(project.root, f"{project.name}-client-1")
    # one network namespace for both, the holder's; not the host's
    ns = {os.readlink(f"/proc/{pid}/ns/net") for pid in (holder.pid, web.pid, client.pid)}
    assert len(ns) == 1 and ns != {os.readlink("/proc/self/ns/net")}
    code, out, err = project("exec", "client", "wget", "-q", "-O-", "http://web/")
    assert code == 0, err
    assert out == f"{web.short_id}\n"
    code, out, _ = project("exec", "web", "cat", "/etc/hosts")
    names = out.splitlines()[-1].split()
    assert names[0] == "127.0.0.1"
    assert {f"{project.name}-web-1", "web", web.short_id, f"{project.name}-client-1", "client", "cli"} <= set(names)
    code, out, err = project("run", "--rm", "client", "wget", "-q", "-O-", "http://web/")
    assert code == 0 and out == f"{web.short_id}\n", err
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert resp.read().decode() == f"{web.short_id}\n"
    # no bridge network was made
    assert not (project.root / "networks").exists() or not [
        p for p in (project.root / "networks").iterdir() if p.name.startswith(project.name)]
    code, _, err = project("down", "-t", "1")
    assert code == 0, err
    assert not Path(f"/proc/{holder.pid}").exists()
    assert sharedns.find(project.root, project.name) is None
    assert not (project.root / sharedns.SHARED / project.name).exists()
    problems = [p for p in _leftovers(project.root) if project.name in p or FORWARDER in p
                or "/containers/" in p or "nsinit" in p]
    assert not problems, problems
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_a_bad_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from layerbuild.errors import UsageError

    monkeypatch.setenv(sharedns.BACKEND_ENV, "vxlan")
    with pytest.raises(UsageError, match="invalid LAYERBUILD_NETWORK_BACKEND"):
        sharedns.wanted()


def test_bridges_are_possible_only_as_root_in_the_initial_user_namespace() -> None:
    import subprocess
    import sys

    code = "from layerbuild.runtime.sharedns import bridges_possible as b; print(b())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(os.geteuid() == 0)
    if os.geteuid() == 0:  # as "root" of a user namespace of our own, bridges are out of reach
        done = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "False"


ROOTLESS = r"""
import io, json, os, subprocess, sys
from pathlib import Path
from layerbuild.cli.main import main
from layerbuild.image import import_rootfs
from layerbuild.store import Store

home = Path(sys.argv[1])
with Store.open(home / "root") as store, open(home / "busybox.tar", "rb") as f:
    import_rootfs(store, f, "lbtest/busybox:rootless")
(home / "proj").mkdir(exist_ok=True)
(home / "proj" / "compose.yaml").write_text('''
name: rootless
services:
  web:
    image: lbtest/busybox:rootless
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: ["%s:8080"]
  client:
    image: lbtest/busybox:rootless
    command: ["sleep", "60"]
''')
cli = ["--root", str(home / "root"), "compose", "-f", str(home / "proj" / "compose.yaml")]
out = {"up": main([*cli, "up", "-d"])}
out["exec"] = main([*cli, "exec", "client", "sh", "-c", "for i in 1 2 3 4 5; do wget -q -O- http://web:8080/ && exit; sleep 0.2; done; exit 9"])
import urllib.request
with urllib.request.urlopen("http://127.0.0.1:%s/", timeout=5) as resp:
    out["published"] = resp.read().decode()
sys.stdout.flush()
out["down"] = main([*cli, "down", "-t", "1"])
out["left"] = os.path.exists(home / "root" / "sharedns" / "rootless")
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_rootless_falls_back_to_the_shared_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real unprivileged user (no environment forcing it): the fallback is chosen and said, a
    client reaches the server by name, a published port answers on the host's loopback."""
    import tempfile

    from tests.runtime.conftest import busybox_tar
    from tests.runtime.rootless import as_user, ensure_user, python_for_user

    user = ensure_user()
    home = Path(tempfile.mkdtemp(prefix="lb-rootless-compose-"))
    try:
        os.chmod(home, 0o755)
        (home / "busybox.tar").write_bytes(busybox_tar())
        port = _free_port()
        (home / "script.py").write_text(ROOTLESS % (port, port))
        for path in (home, home / "busybox.tar", home / "script.py"):
            os.chown(path, user.pw_uid, user.pw_gid)
        python, env = python_for_user(home)
        proc = as_user([python, str(home / "script.py"), str(home)], env)
        result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert result, proc.stdout + proc.stderr
        import json

        out = json.loads(result[0].removeprefix("RESULT "))
        assert out == {"up": 0, "exec": 0, "published": "hello\n", "down": 0, "left": False}, proc.stderr
        assert proc.stdout.count("hello\n") == 1
        assert proc.stderr.count(sharedns.NOTICE) == 1
        left = [pid for pid in os.listdir("/proc") if pid.isdigit() and _owner(pid) == user.pw_uid]
        assert not left, left  # no holder, forwarder, supervisor or container process of the user's
        assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(home) in line]
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def _owner(pid: str) -> int | None:
    """The uid of a live process (None for one gone or a zombie: this machine's init reaps late)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return None
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
