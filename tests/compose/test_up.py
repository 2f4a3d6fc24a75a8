"""`compose up/down/ps/logs/run/exec/stop/start` of real projects on the busybox base: services reach
each other by name over their project network, depends_on conditions hold, published ports answer
on the host's loopback, named volumes outlive `down`, networks are apart, logs come prefixed, restart
policies restart, and `down` leaves no process, mount or namespace behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.runtime import bridge, containers
from layerbuild.runtime.ports import FORWARD
from tests.compose.kit import write
from tests.conftest import BUSYBOX_BASE, busybox_binary

pytestmark = [pytest.mark.integration]
IMAGE = "lbtest/busybox:compose"
FORWARDER = str(FORWARD)  # this checkout's: other checkouts' tests may run on the machine at once


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.skip("project networks need root")
    base = tmp_path_factory.mktemp("compose-up")
    ctx = base / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN mkdir -p /www /tmp /data && chmod 1777 /tmp\n")
    shutil.copy(busybox_binary(), ctx / "busybox")
    store = base / "root"
    assert main(["--root", str(store), "build", "-q", "-t", IMAGE, str(ctx)]) == 0
    return store


class Project:
    def __init__(self, root: Path, directory: Path, name: str, capfd: pytest.CaptureFixture[str]) -> None:
        self.root, self.dir, self.name, self.capfd = root, directory, name, capfd

    def write(self, services: str, extra: str = "") -> None:
        write(self.dir, {"compose.yaml": f"name: {self.name}\nservices:\n{services}{extra}"})

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capfd.readouterr()
        code = main(["--root", str(self.root), "compose", "-f", str(self.dir / "compose.yaml"), *argv])
        out, err = self.capfd.readouterr()
        return code, out, err

    def ps(self, *extra: str) -> dict[str, dict[str, object]]:
        code, out, err = self("ps", "--json", *extra)
        assert code == 0, err
        return {e["Service"]: e for e in json.loads(out)}


@pytest.fixture
def project(root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> Iterator[Project]:
    p = Project(root, tmp_path / "proj", "t" + secrets.token_hex(4), capfd)
    p.dir.mkdir()
    yield p
    if (p.dir / "compose.yaml").exists():
        p("down", "-v", "-t", "1")


def _until(what: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(what) and what():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


WEB = f"""\
  web:
    image: {IMAGE}
    command: ["sh", "-c", "hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
"""


@pytest.mark.slow
def test_a_client_reaches_the_http_service_by_name(project: Project) -> None:
    project.write(WEB + f"""\
  client:
    image: {IMAGE}
    command: ["wget", "-q", "-O-", "http://web/"]
    depends_on: [web]
""")
    code, _, err = project("up", "-d")
    assert code == 0, err
    code, out, err = project("run", "--rm", "client")
    assert code == 0, err
    web = containers.find(project.root, f"{project.name}-web-1")
    assert out == f"{web.short_id}\n"  # the page web wrote: its hostname, docker's default
    # the service's own container, with exec: names resolve there too
    code, out, _ = project("exec", "web", "sh", "-c", "wget -q -O- http://web/ && exit 4")
    assert code == 4 and out == f"{web.short_id}\n"


@pytest.mark.slow
def test_depends_on_service_healthy_waits_for_the_healthcheck(project: Project) -> None:
    project.write(f"""\
  api:
    image: {IMAGE}
    command: ["sh", "-c", "sleep 2; echo ok > /www/status; exec httpd -f -p 80 -h /www"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://localhost/status"]
      interval: 500ms
      retries: 20
  app:
    image: {IMAGE}
    command: ["sh", "-c", "wget -q -O- http://api/status; sleep 30"]
    depends_on:
      api: {{condition: service_healthy}}
""")
    begin = time.time()
    code, _, err = project("up", "-d")
    assert code == 0, err
    assert time.time() - begin >= 2  # it waited for api to answer
    states = project.ps()
    assert states["api"]["Health"] == "healthy" and states["app"]["State"] == "running"
    assert states["app"]["Health"] == ""  # no healthcheck of its own
    code, out, _ = project("logs", "--no-color", "app")
    assert out == f"{project.name}-app-1  | ok\n"


@pytest.mark.slow
def test_unhealthy_dependency_fails_up(project: Project) -> None:
    project.write(f"""\
  api:
    image: {IMAGE}
    command: ["sleep", "30"]
    healthcheck: {{test: "exit 1", interval: 200ms, retries: 2}}
  app:
    image: {IMAGE}
    command: ["true"]
    depends_on: {{api: {{condition: service_healthy}}}}
""")
    code, _, err = project("up", "-d")
    assert code == 1 and "is unhealthy" in err
    assert project.ps()["api"]["Health"] == "unhealthy"


@pytest.mark.slow
def test_migration_with_service_completed_successfully_and_a_named_volume(project: Project) -> None:
    project.write(f"""\
  migrate:
    image: {IMAGE}
    command: ["sh", "-c", "sleep 1; echo migrated >> /data/log"]
    volumes: [db:/data]
  app:
    image: {IMAGE}
    command: ["sh", "-c", "cat /data/log; sleep 30"]
    volumes: [db:/data]
    depends_on:
      migrate: {{condition: service_completed_successfully}}
""", "volumes:\n  db: {}\n")
    code, _, err = project("up", "-d")
    assert code == 0, err
    _until(lambda: project("logs", "--no-log-prefix", "app")[1] == "migrated\n")
    assert project.ps("-a")["migrate"]["State"] == "exited" and project.ps("-a")["migrate"]["ExitCode"] == 0
    volume = project.root / "volumes" / f"{project.name}_db" / "_data"
    # down keeps the volume, the next up finds what it holds
    assert project("down", "-t", "1")[0] == 0
    assert (volume / "log").read_text() == "migrated\n"
    assert project("up", "-d")[0] == 0
    _until(lambda: project("logs", "--no-log-prefix", "app")[1] == "migrated\nmigrated\n")
    # down -v takes it
    code, _, err = project("down", "-v", "-t", "1")
    assert code == 0 and f"Volume {project.name}_db  Removed" in err
    assert not volume.parent.exists()


@pytest.mark.slow
def test_a_failed_migration_fails_up(project: Project) -> None:
    project.write(f"""\
  migrate: {{image: {IMAGE}, command: ["sh", "-c", "exit 3"]}}
  app:
    image: {IMAGE}
    command: ["true"]
    depends_on: {{migrate: {{condition: service_completed_successfully}}}}
""")
    code, _, err = project("up", "-d")
    assert code == 1 and "service 'migrate' didn't complete successfully: exit 3" in err
    assert "app" not in project.ps("-a")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_published_port_from_the_hosts_loopback(project: Project) -> None:
    port = _free_port()
    project.write(WEB + f"    ports: ['{port}:80']\n")
    assert project("up", "-d")[0] == 0
    web = containers.find(project.root, f"{project.name}-web-1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert resp.read().decode() == f"{web.short_id}\n"
    assert project.ps()["web"]["Publishers"] == [
        {"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": port, "Protocol": "tcp"}]
    assert project("down", "-t", "1")[0] == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


@pytest.mark.slow
def test_two_networks_keep_their_services_apart(project: Project) -> None:
    project.write(WEB + f"""\
    networks: [back]
  front:
    image: {IMAGE}
    command: ["sleep", "60"]
    networks: [front]
  both:
    image: {IMAGE}
    command: ["sleep", "60"]
    networks: [front, back]
""", "networks:\n  front: {}\n  back: {}\n")
    assert project("up", "-d")[0] == 0
    address = containers.find(project.root, f"{project.name}-web-1").addresses[f"{project.name}_back"]
    probe = "timeout 3 wget -q -O- http://{}/ >/dev/null; exit $?"
    assert project("exec", "both", "sh", "-c", probe.format("web"))[0] == 0
    assert project("exec", "front", "sh", "-c", probe.format("web"))[0] != 0  # not even a name there
    assert project("exec", "front", "sh", "-c", probe.format(address))[0] != 0  # nor a route
    assert project.ps()["both"]["Networks"] == [f"{project.name}_back", f"{project.name}_front"]


@pytest.mark.slow
def test_logs_come_interleaved_with_prefixes(project: Project) -> None:
    project.write(f"""\
  ping:
    image: {IMAGE}
    command: ["sh", "-c", "for i in 1 2 3; do sleep 1; echo ping $$i; sleep 1; done"]
  pong:
    image: {IMAGE}
    command: ["sh", "-c", "for i in 1 2 3; do sleep 2; echo pong $$i; done"]
""")  # ping at 1, 3, 5 s, pong at 2, 4, 6 s: `logs -f` starts before either writes
    assert project("up", "-d")[0] == 0
    code, out, _ = project("logs", "-f", "--no-color")
    assert code == 0
    lines = out.splitlines()
    ping, pong = f"{project.name}-ping-1  | ", f"{project.name}-pong-1  | "
    assert [line.split("| ")[1] for line in lines] == ["ping 1", "pong 1", "ping 2", "pong 2", "ping 3", "pong 3"]
    assert all(line.startswith(ping if "ping" in line.split("| ")[1] else pong) for line in lines)


@pytest.mark.slow
def test_a_crashed_service_is_restarted_by_its_policy(project: Project) -> None:
    project.write(f"""\
  flaky:
    image: {IMAGE}
    command: ["sh", "-c", "echo started; sleep 0.3; exit 3"]
    restart: on-failure:2
  steady:
    image: {IMAGE}
    command: ["sh", "-c", "echo once"]
    restart: on-failure
""")
    assert project("up", "-d")[0] == 0
    # started, then restarted twice, then left exited: on-failure:2
    _until(lambda: project("logs", "--no-log-prefix", "flaky")[1] == "started\n" * 3)
    _until(lambda: project.ps("-a")["flaky"]["State"] == "exited")
    time.sleep(1.5)  # and not restarted again
    assert project("logs", "--no-log-prefix", "flaky")[1] == "started\n" * 3
    assert project.ps("-a")["flaky"]["ExitCode"] == 3
    assert project("logs", "--no-log-prefix", "steady")[1] == "once\n"  # exit 0: no restart
    # Each restart ran in a cgroup of its own, and the last run's went when the next began; down
    # leaves none of the project's.
    ids = [c.short_id for c in containers.list_all(project.root) if c.name.startswith(project.name)]
    assert project("down")[0] == 0
    left = [p for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir()
            for p in h.glob("layerbuild-*") if any(p.name.endswith(i) for i in ids)]
    assert not left, left


@pytest.mark.slow
def test_stop_start_and_no_restart_after_stop(project: Project) -> None:
    project.write(WEB + "    restart: always\n")
    assert project("up", "-d")[0] == 0
    assert project("stop", "-t", "1")[0] == 0
    time.sleep(1.2)
    assert project.ps("-a")["web"]["State"] == "exited"  # stopped by us: `always` does not bring it back
    assert project("start")[0] == 0
    assert project.ps()["web"]["State"] == "running"
    code, _, err = project("restart", "-t", "1")
    assert code == 0, err
    assert project.ps()["web"]["State"] == "running"


def _leftovers(root: Path) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if str(root) in line:
            found.append(f"mount: {line}")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            env = Path(f"/proc/{pid}/cwd").resolve()
        except OSError:
            continue
        if str(root) in cmd or str(env).startswith(str(root)) or FORWARDER in cmd:
            found.append(f"process {pid}: {cmd}")
    return found


@pytest.mark.slow
def test_down_leaves_no_process_mount_or_namespace(project: Project) -> None:
    port = _free_port()
    project.write(WEB + f"    ports: ['{port}:80']\n    healthcheck: {{test: 'true', interval: 300ms}}\n"
                  "    stop_grace_period: 1s\n" + f"""\
  worker:
    image: {IMAGE}
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    stop_grace_period: 1s
""")
    assert project("up", "-d", "--wait")[0] == 0
    assert project.ps()["web"]["Health"] == "healthy"
    pids = [c.pid for c in containers.list_all(project.root) if c.name.startswith(project.name)]
    assert len(pids) == 2
    netns = [i.netns for i in bridge.list_all(project.root) if i.name.startswith(project.name)]
    assert netns and all(str(n) in Path("/proc/self/mountinfo").read_text() for n in netns)
    begin = time.monotonic()
    code, _, err = project("down")
    assert code == 0, err
    # PID 1 without a handler ignores SIGTERM (httpd; the worker traps it): SIGKILL after the 1 s grace
    assert time.monotonic() - begin < 6
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    assert not [i for i in bridge.list_all(project.root) if i.name.startswith(project.name)]
    assert not [c for c in containers.list_all(project.root) if c.name.startswith(project.name)]
    problems = [p for p in _leftovers(project.root) if project.name in p or FORWARDER in p
                or "/networks/" in p or "/containers/" in p]
    assert not problems, problems
    assert not (project.root / "compose" / project.name).exists()  # the supervisor went too


@pytest.mark.slow
def test_errors_are_clear(project: Project) -> None:
    project.write(f"  web: {{image: {IMAGE}, networks: [nowhere]}}\n")
    code, _, err = project("up", "-d")
    assert code == 1 and "compose.yaml:3: services.web.networks" in err and "undefined network 'nowhere'" in err
    assert "Traceback" not in err
    project.write(f"  web: {{image: {IMAGE}, command: ['sleep', '5']}}\n")
    code, _, err = project("exec", "web", "true")
    assert code == 1 and "service 'web' is not running" in err
    code, _, err = project("up", "-d", "nosuch")
    assert code == 1 and "no such service: nosuch" in err


@pytest.mark.slow
def test_up_attached_follows_the_logs_until_the_services_end(project: Project) -> None:
    project.write(f"""\
  once:
    image: {IMAGE}
    command: ["sh", "-c", "sleep 0.5; echo done here; exit 0"]
""")
    code, out, err = project("up")
    assert code == 0, err
    assert out == f"{project.name}-once-1  | done here\n"
    code, _, _ = project("run", "--rm", "once", "sh", "-c", "exit 7")
    assert code == 7  # a one-off container's status is compose run's


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("10", 10.0),
                                               ("1h", 3600.0), (2, 2.0)])
def test_durations(text: object, seconds: float) -> None:
    from layerbuild.compose.services import duration

    assert duration(text, 0.0) == seconds


def test_a_bad_duration_is_refused() -> None:
    from layerbuild.compose.services import duration
    from layerbuild.errors import ComposeFileError

    with pytest.raises(ComposeFileError, match="invalid duration"):
        duration("5 minutes", 0.0)


@pytest.mark.parametrize(("policy", "code", "restarts", "expected"), [
    ("no", 1, 0, False), ("always", 0, 5, True), ("unless-stopped", 0, 0, True),
    ("on-failure", 0, 0, False), ("on-failure", 2, 9, True), ("on-failure:2", 2, 1, True),
    ("on-failure:2", 2, 2, False),
])
def test_restart_policies(policy: str, code: int, restarts: int, expected: bool) -> None:
    from layerbuild.compose.supervisor import should_restart

    assert should_restart(policy, code, restarts) is expected
