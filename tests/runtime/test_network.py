"""The network modes on real namespaces and a real slirp4netns, as root and rootless.

The peers are the test's own: TCP servers on the host's loopback and on a dummy interface's
198.18.x.x address (what "outside" means here; no traffic leaves the machine), and a DNS responder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from layerbuild.runtime import ProcessSpec, SandboxError, launch, run_step
from layerbuild.runtime.network import GATEWAY, NAMESERVER, resolv_conf
from tests.conftest import BUSYBOX_BASE, REPO
from tests.runtime.netkit import (
    alive,
    children_named,
    dns_server,
    gone,
    loopback_address,
    outside_address,
    probe,
    reached,
    tcp_server,
)
from tests.runtime.rootless import USER, python_for_user, rootless_home, with_usable_tun  # noqa: F401

pytestmark = pytest.mark.integration

# Runs RUN-style steps, one per (network, script) case, and prints their results as JSON.
PROBE = r"""
import io, json, sys
from pathlib import Path
from layerbuild.errors import LayerbuildError
from layerbuild.image import import_rootfs, resolve_image
from layerbuild.runtime import ProcessSpec, lower_dirs_for, run_step
from layerbuild.store import Store

root, scratch, cases = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
with Store.open(root) as store:
    try:
        image = resolve_image(store, "busybox")
    except LayerbuildError:  # the rootless user's own store, on first use
        with open(root.parent / "busybox.tar", "rb") as f:
            import_rootfs(store, f, "busybox")
        image = resolve_image(store, "busybox")
    lowers = lower_dirs_for(store, image.config.diff_ids)
out = []
for i, (mode, script) in enumerate(cases):
    res = run_step(lowers, scratch / str(i) / "upper", scratch / str(i) / "work",
                   ProcessSpec(argv=("/bin/sh", "-c", script), network=mode, hostname="probe"))
    out.append({"code": res.exit_code, "out": res.output_tail.decode(), "error": res.error})
print(json.dumps(out))
"""


class Prober:
    """Runs PROBE as root or as the unprivileged user, optionally with another host resolv.conf."""

    def __init__(self, who: str, root: Path, python: str, env: dict[str, str]) -> None:
        self.who, self.root, self.python, self.env = who, root, python, env
        self.script = root.parent / "probe.py"
        self.script.write_text(PROBE)
        os.chmod(self.script, 0o644)

    def run(self, cases: list[tuple[str, str]], resolv: str | None = None) -> list[dict[str, object]]:
        scratch = Path(tempfile.mkdtemp(dir=self.root / "tmp"))
        try:
            if self.who == "rootless":
                shutil.chown(scratch, USER, USER)
            proc = self.command([str(self.script), str(self.root), str(scratch), json.dumps(cases)], resolv)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        assert proc.returncode == 0, proc.stderr
        results: list[dict[str, object]] = json.loads(proc.stdout)
        return results

    def command(self, args: list[str], resolv: str | None = None) -> subprocess.CompletedProcess[str]:
        """`python ARGS` as the prober's user; with `resolv`, that is the host's resolv.conf it sees."""
        argv = [self.python, *args]
        env = {**os.environ, **self.env} if self.who == "root" else None
        if self.who == "rootless":
            argv = ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--reset-env", "env",
                    *(f"{k}={v}" for k, v in self.env.items()), *argv]
        if resolv is not None:  # the host's resolver, as seen by this process tree only
            conf = Path(tempfile.mkdtemp(dir=self.root / "tmp")) / "resolv.conf"
            conf.write_text(resolv)
            os.chmod(conf.parent, 0o755)
            os.chmod(conf, 0o644)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
                    f'mount --bind {conf} /etc/resolv.conf && exec "$@"', "sh", *argv]
        if self.who == "rootless":
            argv = with_usable_tun(argv)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        finally:
            if resolv is not None:
                shutil.rmtree(conf.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def rootless_store(request: pytest.FixtureRequest, busybox_rootfs_tar: bytes) -> Iterator[Path]:
    home: Path = request.getfixturevalue("rootless_home")
    root = home / "net" / "root"
    root.mkdir(parents=True)
    (root / "tmp").mkdir()
    (root.parent / "busybox.tar").write_bytes(busybox_rootfs_tar)
    shutil.chown(root.parent, USER, USER)
    shutil.chown(root, USER, USER)
    shutil.chown(root / "tmp", USER, USER)
    yield root


@pytest.fixture(params=["root", "rootless"])
def prober(request: pytest.FixtureRequest, shared_root: Path) -> Prober:
    if request.param == "root":
        return Prober("root", shared_root, sys.executable, {"PYTHONPATH": str(REPO)})
    root: Path = request.getfixturevalue("rootless_store")
    python, env = python_for_user(root.parent.parent)
    return Prober("rootless", root, python, env)


@pytest.fixture(scope="module")
def outside() -> Iterator[str]:
    with outside_address() as address:
        yield address


def test_what_each_mode_reaches(prober: Prober, outside: str) -> None:
    with tcp_server(outside) as far, tcp_server("127.0.0.1") as near:
        script = probe(far, near, replace(near, host=GATEWAY))
        default, none, host = prober.run([("default", script), ("none", script), ("host", script)])
        assert default["code"] == 0 and none["code"] == 0 and host["code"] == 0, (default, none, host)
        # default: outbound access, but neither the host's loopback nor the gateway's way to it
        assert reached(str(default["out"]), far), default
        assert not reached(str(default["out"]), near) and not reached(str(default["out"]), near, GATEWAY)
        # none: loopback only
        assert not reached(str(none["out"]), far) and not reached(str(none["out"]), near)
        # host: the host's own network, loopback services included
        assert reached(str(host["out"]), far) and reached(str(host["out"]), near)
        assert near.connections == ["127.0.0.1"]  # the one from --network host, nothing else got there


@pytest.mark.parametrize("where", ["outside", "loopback"])
def test_dns_goes_to_the_hosts_resolver(prober: Prober, outside: str, where: str) -> None:
    """The host's resolver (on a 198.18 address, or on 127.x as systemd-resolved's is) answers
    the default network's lookups through slirp4netns's forwarder; `none` has no nameserver."""
    resolver = outside if where == "outside" else loopback_address()
    with dns_server(resolver, {"peer.layerbuild.test": "198.18.77.7"}) as asked:
        host_conf = f"nameserver {resolver}\nsearch layerbuild.test\noptions ndots:1\n"
        script = "cat /etc/resolv.conf; nslookup peer.layerbuild.test"
        default, none = prober.run([("default", script), ("none", script)], resolv=host_conf)
    assert default["code"] == 0, default
    out = str(default["out"])
    assert out.startswith(f"nameserver {NAMESERVER}\nsearch layerbuild.test\noptions ndots:1\n"), out
    assert "198.18.77.7" in out and "peer.layerbuild.test" in asked
    assert none["code"] != 0 and "198.18.77.7" not in str(none["out"])


def test_run_steps_of_a_build(prober: Prober, outside: str) -> None:
    """A real build's RUN steps, as root and rootless: the default reaches outside, not loopback."""
    ctx = prober.root.parent / f"ctx-{os.getpid()}"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    dest = prober.root.parent / f"out-{os.getpid()}"
    with tcp_server(outside) as far, tcp_server("127.0.0.1") as near:
        (ctx / "probe.sh").write_text(probe(far, near) + "\n")
        (ctx / "Dockerfile").write_text(BUSYBOX_BASE + "COPY probe.sh /\nRUN sh /probe.sh > /default\n"
                                        "RUN --network=none sh /probe.sh > /none\n")
        if prober.who == "rootless":
            for path in (ctx, *ctx.iterdir()):
                shutil.chown(path, USER, USER)
        try:
            built = prober.command(["-m", "layerbuild", "--root", str(prober.root), "build", "--progress", "plain",
                                    "--output", f"type=local,dest={dest}", str(ctx)])
            assert built.returncode == 0, built.stderr
            default, none = (dest / "default").read_text(), (dest / "none").read_text()
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
    assert reached(default, far) and not reached(default, near)
    assert not reached(none, far) and not reached(none, near)


def test_etc_files_per_mode(lowers: list[Path], scratch: Path) -> None:
    res = run_step(lowers, scratch / "upper", scratch / "work",
                   ProcessSpec(argv=("/bin/sh", "-c", "cat /etc/hosts; hostname"), hostname="box"))
    assert res.exit_code == 0 and "10.0.2.100\tbox\n" in res.output_tail.decode()
    assert resolv_conf("default", "nameserver 127.0.0.53\nsearch corp\n") == "nameserver 10.0.2.3\nsearch corp\n"
    assert resolv_conf("host", "nameserver 127.0.0.53\n") == "nameserver 127.0.0.53\n"
    assert resolv_conf("host", "search corp\n") == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert resolv_conf("none", "nameserver 127.0.0.53\n") == ""


def test_helper_ends_with_the_container(lowers: list[Path], scratch: Path) -> None:
    started = launch(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("sleep", "30")))
    try:
        assert started.error is None and started.network_pid and alive(started.network_pid)
        assert children_named(started.helper.pid, "slirp4netns") == [started.network_pid]
        # in a session of its own: signals to the container's process group or terminal miss it
        assert os.getsid(started.network_pid) == started.network_pid != os.getsid(started.helper.pid)
        os.kill(started.pid, signal.SIGKILL)
        assert started.wait() == 137
        assert gone([started.network_pid])  # killed by the helper as the container ended
    finally:
        started.release()


KILLED = r"""
import sys
from pathlib import Path
from layerbuild.runtime import ProcessSpec, launch
lowers, scratch = [Path(p) for p in sys.argv[2:]], Path(sys.argv[1])
started = launch(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("sleep", "60")))
print(started.helper.pid, started.pid, started.network_pid, flush=True)
started.wait()
"""


def test_killed_caller_takes_the_network_helper_along(lowers: list[Path], scratch: Path) -> None:
    """A SIGKILL of the build (or of a foreground `run`) ends its container and its slirp4netns."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(scratch), *map(str, lowers)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 3 and all(alive(p) for p in pids)
    proc.kill()
    proc.wait()
    assert gone(pids)


def test_missing_slirp4netns_is_a_clear_error(lowers: list[Path], scratch: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUILD_SLIRP4NETNS", str(scratch / "no-such-slirp4netns"))
    with pytest.raises(SandboxError) as err:
        run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("true",)))
    assert "needs slirp4netns" in err.value.message and "--network host" in (err.value.hint or "")
    res = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("true",), network="none"))
    assert res.exit_code == 0


def test_failing_helper_is_reported(lowers: list[Path], scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = scratch / "slirp4netns"
    broken.write_text("#!/bin/sh\necho 'cannot open tap' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("LAYERBUILD_SLIRP4NETNS", str(broken))
    res = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("true",)))
    assert res.exit_code == 125 and res.error is not None
    assert "slirp4netns could not connect the network namespace: cannot open tap" in res.error


def rootless_refusal_needed() -> bool:
    return stat.S_IMODE(os.stat("/dev/net/tun").st_mode) & 0o006 != 0o006


def test_rootless_without_a_usable_tun_is_refused(request: pytest.FixtureRequest) -> None:
    if not rootless_refusal_needed():
        pytest.skip("/dev/net/tun is open to everyone here")
    root: Path = request.getfixturevalue("rootless_store")
    python, env = python_for_user(root.parent.parent)
    script = root.parent / "refused.py"
    script.write_text(
        "from layerbuild.runtime import ProcessSpec, SandboxError, run_step\n"
        "from pathlib import Path\nimport sys\n"
        "try:\n"
        "    run_step([], Path(sys.argv[1]) / 'u', Path(sys.argv[1]) / 'w', ProcessSpec(argv=('true',)))\n"
        "except SandboxError as exc:\n"
        "    print(exc.render())\n")
    proc = subprocess.run(["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--reset-env", "env",
                           *(f"{k}={v}" for k, v in env.items()), python, str(script), str(root / "tmp")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("the default network needs /dev/net/tun, which this user cannot open\nhint: ")
    assert "--network host" in proc.stdout


def lb(root: Path, capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from layerbuild.cli.main import main

    code = main(["--root", str(root), *argv])
    out, err = capfd.readouterr()
    return code, out, err


def test_run_modes_through_the_cli(shared_root: Path, outside: str, capfd: pytest.CaptureFixture[str]) -> None:
    with tcp_server(outside) as far, tcp_server("127.0.0.1") as near:
        script = probe(far, near, replace(near, host=GATEWAY))
        outputs = {}
        for mode in ("default", "none", "host"):
            flags = () if mode == "default" else ("--network", mode)
            code, outputs[mode], err = lb(shared_root, capfd, "run", "--rm", *flags, "busybox", "sh", "-c", script)
            assert code == 0, err
    assert reached(outputs["default"], far) and not reached(outputs["default"], near)
    assert not reached(outputs["default"], near, GATEWAY)
    assert not reached(outputs["none"], far) and not reached(outputs["none"], near)
    assert reached(outputs["host"], far) and reached(outputs["host"], near)


def test_stop_leaves_no_network_helper(shared_root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from layerbuild.runtime import containers

    name = f"net-{os.getpid()}"
    code, _, err = lb(shared_root, capfd, "run", "-d", "--name", name, "busybox", "sleep", "60")
    assert code == 0, err
    c = containers.find(shared_root, name)
    helpers = children_named(c.helper_pid, "slirp4netns")
    assert len(helpers) == 1
    assert lb(shared_root, capfd, "stop", "-t", "0", name)[0] == 0
    assert gone(helpers)
    assert lb(shared_root, capfd, "rm", name)[0] == 0


def test_run_without_slirp4netns(shared_root: Path, capfd: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUILD_SLIRP4NETNS", "/nonexistent/slirp4netns")
    code, out, err = lb(shared_root, capfd, "run", "--rm", "busybox", "true")
    assert code == 125 and out == ""
    assert err.startswith("error: the default network needs slirp4netns") and "hint: install it" in err
    assert "Traceback" not in err
    assert lb(shared_root, capfd, "run", "--rm", "--network", "host", "busybox", "true")[0] == 0
