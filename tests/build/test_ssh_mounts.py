"""`--ssh` and `RUN --mount=type=ssh` in real builds: a real OpenSSH agent holding a generated key, and
the host's `ssh-add` (copied with its libraries into the base) asking it through the step's socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from tests.build.conftest import write
from tests.build.kit import export
from tests.conftest import BUSYBOX_BASE
from tests.runtime.rootless import as_user, ensure_user, python_for_user, rootless_home  # noqa: F401

pytestmark = pytest.mark.integration

SSH_BASE = BUSYBOX_BASE + "COPY sshroot/ /\nRUN mkdir -p /out\n"


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/setup installs openssh-client)")


def copy_with_libraries(program: str, dest: Path) -> None:
    """`program` and the shared libraries `ldd` names, at their own paths under `dest`."""
    path = shutil.which(program)
    assert path is not None
    files = [path]
    for line in subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout.splitlines():
        words = line.split()
        lib = words[2] if "=>" in words and len(words) > 2 else words[0]
        if lib.startswith("/"):
            files.append(lib)
    for name in files:
        target = dest / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(name, target)


def keygen(where: Path, name: str) -> tuple[Path, str]:
    """A new ed25519 key without a passphrase, and its fingerprint as `ssh-add -l` prints it."""
    key = where / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    return key, fingerprint


def listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class Agent:
    """A real ssh-agent of the test's own, at `sock`."""

    def __init__(self, where: Path) -> None:
        self.sock = where / "agent.sock"
        self.proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(self.sock)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not listening(self.sock):  # bound is not yet listening
            assert time.monotonic() < deadline and self.proc.poll() is None, "ssh-agent did not start"
            time.sleep(0.01)

    def add(self, key: Path) -> None:
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(self.sock)}, check=True)

    def clear(self) -> None:
        subprocess.run(["ssh-add", "-D"], env={**os.environ, "SSH_AUTH_SOCK": str(self.sock)}, check=True,
                       capture_output=True)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    need("ssh-keygen", "ssh-agent", "ssh-add")
    where = tmp_path / "keys"
    where.mkdir()
    return {name: keygen(where, name) for name in ("one", "two")}


@pytest.fixture
def agent(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> Iterator[Agent]:
    running = Agent(tmp_path)
    running.add(keys["one"][0])
    yield running
    running.stop()


@pytest.fixture
def ssh_ctx(bb_ctx: Path) -> Path:
    need("ssh-add", "ldd")
    copy_with_libraries("ssh-add", bb_ctx / "sshroot")
    return bb_ctx


def out(root: Path, tmp_path: Path, name: str) -> str:
    return (export(root, "s:1", tmp_path / "fs") / "out" / name).read_text()


def test_a_step_lists_the_agents_key_through_its_own_socket(
        ssh_ctx: Path, root: Path, tmp_path: Path, agent: Agent, keys: dict[str, tuple[Path, str]]) -> None:
    write(ssh_ctx, {"Dockerfile": SSH_BASE + (
        "RUN --mount=type=ssh ssh-add -l > /out/keys && echo $SSH_AUTH_SOCK > /out/env"
        " && stat -c '%F %a %u:%g' $SSH_AUTH_SOCK > /out/stat && cat /proc/self/mountinfo > /out/mounts\n")})
    layerbuild.build(ssh_ctx, root=root, tags=["s:1"], ssh={"default": [agent.sock]})
    assert keys["one"][1] in out(root, tmp_path, "keys")
    assert out(root, tmp_path, "env") == "/run/buildkit/ssh_agent.0\n"
    assert out(root, tmp_path, "stat") == "socket 600 0:0\n"
    assert str(agent.sock) not in out(root, tmp_path, "mounts")  # the agent's own socket is not shown
    fs = export(root, "s:1", tmp_path / "fs")
    assert not (fs / "run" / "buildkit" / "ssh_agent.0").exists()  # nor is the mount point kept in the layer


def test_default_means_ssh_auth_sock(ssh_ctx: Path, root: Path, tmp_path: Path, agent: Agent,
                                     keys: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    write(ssh_ctx, {"Dockerfile": SSH_BASE + "RUN --mount=type=ssh,id=default ssh-add -l > /out/keys\n"})
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.sock))
    code = main(["--root", str(root), "build", "--progress", "quiet", "-t", "s:1", "--ssh", "default", str(ssh_ctx)])
    assert code == 0
    assert keys["one"][1] in out(root, tmp_path, "keys")


def test_key_files_are_served_by_an_agent_of_the_builds_own(
        ssh_ctx: Path, root: Path, tmp_path: Path, keys: dict[str, tuple[Path, str]],
        capfd: pytest.CaptureFixture[str]) -> None:
    write(ssh_ctx, {"Dockerfile": SSH_BASE + (
        "RUN --mount=type=ssh,id=deploy,target=/ssh/agent,uid=1000,gid=1001,mode=0660"
        " ssh-add -l > /out/keys && stat -c '%a %u:%g' /ssh/agent > /out/stat && echo $SSH_AUTH_SOCK > /out/env\n")})
    both = f"{keys['one'][0]},{keys['two'][0]}"
    code = main(["--root", str(root), "build", "--progress", "quiet", "-t", "s:1", "--ssh", f"deploy={both}",
                 str(ssh_ctx)])
    assert code == 0, capfd.readouterr().err
    listed = out(root, tmp_path, "keys")
    assert keys["one"][1] in listed and keys["two"][1] in listed
    assert out(root, tmp_path, "stat") == "660 1000:1001\n"
    assert out(root, tmp_path, "env") == "/ssh/agent\n"


def test_the_agent_and_its_keys_are_not_part_of_the_key(
        ssh_ctx: Path, root: Path, tmp_path: Path, agent: Agent, keys: dict[str, tuple[Path, str]]) -> None:
    write(ssh_ctx, {"Dockerfile": SSH_BASE + "RUN --mount=type=ssh ssh-add -l > /out/keys\n"})
    first = layerbuild.build(ssh_ctx, root=root, tags=["s:1"], ssh={"default": [agent.sock]})
    agent.clear()
    agent.add(keys["two"][0])
    again = layerbuild.build(ssh_ctx, root=root, tags=["s:1"], ssh={"default": [agent.sock]})
    assert again.image.id == first.image.id and again.summary.executed == 0
    by_key_file = layerbuild.build(ssh_ctx, root=root, tags=["s:1"], ssh={"default": [keys["two"][0]]})
    assert by_key_file.image.id == first.image.id and by_key_file.summary.executed == 0
    assert keys["one"][1] in out(root, tmp_path, "keys")  # what the first build saw


def test_a_mount_without_an_agent_is_skipped_unless_required(ssh_ctx: Path, root: Path, tmp_path: Path,
                                                             agent: Agent) -> None:
    write(ssh_ctx, {"Dockerfile": SSH_BASE + (
        "RUN --mount=type=ssh (test -e /run/buildkit/ssh_agent.0 && echo there || echo skipped) > /out/seen\n")})
    layerbuild.build(ssh_ctx, root=root, tags=["s:1"])
    assert out(root, tmp_path, "seen") == "skipped\n"
    write(ssh_ctx, {"Dockerfile": SSH_BASE + "RUN --mount=type=ssh,required=true ssh-add -l\n"})
    with pytest.raises(layerbuild.BuildError) as info:
        layerbuild.build(ssh_ctx, root=root, tags=["s:1"])
    assert 'no SSH key "default" forwarded from the client' in info.value.render()
    with pytest.raises(layerbuild.BuildError) as info:
        layerbuild.build(ssh_ctx, root=root, tags=["s:1"], ssh={"other": [agent.sock]})
    assert "unset ssh forward key default" in info.value.render()


def test_the_steps_socket_is_gone_when_the_step_ends(tmp_path: Path, agent: Agent,
                                                     keys: dict[str, tuple[Path, str]]) -> None:
    from layerbuild.worker.sshagent import SshAgents

    agents = SshAgents({"default": (agent.sock,)})
    proxy = agents.proxy("default")
    assert proxy is not None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(proxy.path))
    client.sendall(b"\x00\x00\x00\x01\x0b")  # SSH2_AGENTC_REQUEST_IDENTITIES
    answer = client.recv(4096)
    assert answer[4] == 12 and keys["one"][0].name.encode() in answer  # SSH2_AGENT_IDENTITIES_ANSWER
    proxy.close()
    assert not proxy.path.exists()
    assert client.recv(4096) == b""  # an open connection is cut
    later = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(OSError):
        later.connect(str(proxy.path))
    agents.close()


@pytest.mark.parametrize(("value", "words"), [
    ("default={missing}", "cannot use"),
    ("default={key},{sock}", "mixing keys and socket not supported"),
    ("default={sock},{sock}", "only single socket allowed"),
    ("default=", "invalid --ssh"),
])
def test_bad_ssh_values_are_usage_errors(ctx: Path, root: Path, tmp_path: Path, agent: Agent, value: str,
                                         words: str, keys: dict[str, tuple[Path, str]],
                                         capfd: pytest.CaptureFixture[str]) -> None:
    write(ctx, {"Dockerfile": "FROM scratch\n"})
    value = value.format(missing=tmp_path / "nope", key=keys["one"][0], sock=agent.sock)
    code = main(["--root", str(root), "build", "--ssh", value, str(ctx)])
    err = capfd.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err


def test_default_without_ssh_auth_sock_says_so(ctx: Path, root: Path, monkeypatch: pytest.MonkeyPatch,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    write(ctx, {"Dockerfile": "FROM scratch\n"})
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    code = main(["--root", str(root), "build", "--ssh", "default", str(ctx)])
    err = capfd.readouterr().err
    assert code == 2 and "make sure SSH_AUTH_SOCK is set" in err, err


def test_an_encrypted_key_is_refused_with_the_reason(ssh_ctx: Path, root: Path, tmp_path: Path) -> None:
    need("ssh-keygen")
    key = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True)
    write(ssh_ctx, {"Dockerfile": SSH_BASE + "RUN --mount=type=ssh true\n"})
    with pytest.raises(layerbuild.BuildError) as info:
        layerbuild.build(ssh_ctx, root=root, ssh={"default": [key]})
    assert "cannot load the key" in info.value.message and str(key) in info.value.message


def test_rootless_steps_reach_the_agent_too(rootless_home: Path) -> None:  # noqa: F811
    need("ssh-keygen", "ssh-agent", "ssh-add", "ldd")
    user = ensure_user()
    ctx = rootless_home / "ssh-ctx"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    copy_with_libraries("ssh-add", ctx / "sshroot")
    write(ctx, {"Dockerfile": SSH_BASE + (
        "RUN --mount=type=ssh,uid=1000,mode=0600 id -u > /out/me && stat -c '%u %a' $SSH_AUTH_SOCK > /out/stat"
        " && chown 1000 /out\n"
        "USER 1000\n"
        "RUN --mount=type=ssh,uid=1000 ssh-add -l > /out/keys\n")})
    key, fingerprint = keygen(rootless_home, "rootless")
    for path in [ctx, *ctx.rglob("*"), key]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    python, env = python_for_user(rootless_home)
    lb = [python, "-m", "layerbuild", "--root", str(rootless_home / "ssh-store")]
    built = as_user([*lb, "build", "--progress", "plain", "-t", "s:1", "--ssh", f"default={key}", str(ctx)], env)
    assert built.returncode == 0, built.stderr
    ran = as_user([*lb, "run", "--rm", "s:1", "cat", "/out/me", "/out/stat", "/out/keys"], env)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:2] == ["0", "1000 600"] and fingerprint in lines[2], ran.stdout


def test_the_socket_a_build_made_for_a_step_is_closed_when_the_step_ends(
        ssh_ctx: Path, root: Path, tmp_path: Path, agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the build makes its private ssh dir
    write(ssh_ctx, {"Dockerfile": SSH_BASE + "RUN --mount=type=ssh echo ready && sleep 0.5\n"})
    seen: list[tuple[Path, socket.socket]] = []

    def on_event(event: layerbuild.BuildEvent) -> None:
        if event.type == "step.log" and event.message == "ready":  # the step is running now
            for path in scratch.glob("layerbuild-ssh-*/step-*.sock"):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.connect(str(path))  # the live relay, reachable while the step runs
                seen.append((path, client))

    layerbuild.build(ssh_ctx, root=root, tags=["s:1"], ssh={"default": [agent.sock]}, on_event=on_event)
    assert len(seen) == 1
    path, client = seen[0]
    client.settimeout(5)
    assert client.recv(16) == b""  # cut when the step ended
    assert not path.exists() and list(scratch.iterdir()) == []
    with pytest.raises(OSError):
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect(str(path))
