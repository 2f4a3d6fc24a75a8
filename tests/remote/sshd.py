"""A real OpenSSH server for the remote tests: Debian's sshd on 127.0.0.1 on a free port, with its own
config, a generated host key and a client key; root logs in by key only, with a home of the test's own
(SetEnv HOME=...), which is "the remote host": its installation and its store live there."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass
class SshHost:
    dir: Path
    port: int
    key: Path
    known_hosts: Path
    home: Path
    proc: subprocess.Popen[bytes]
    client_env: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"ssh://{self.spec}"

    @property
    def store(self) -> Path:
        return self.home / ".local" / "share" / "layerbuild"

    def ssh_opts(self) -> list[str]:
        return ["--identity", str(self.key), "--ssh-opt", f"UserKnownHostsFile={self.known_hosts}"]

    def layerbuild(self, *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None,
                   input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """The local CLI, in a process of its own, with this client's config, cache and local store."""
        proc = subprocess.run([sys.executable, "-m", "layerbuild", *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **self.client_env, **(env or {})},
                              input=None if input is None else input.decode())
        if check and proc.returncode != 0:
            raise AssertionError(f"layerbuild {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "layerbuild-test", "-f", str(path)],
                   check=True)


def start_sshd(base: Path) -> SshHost:
    if not os.path.exists(SSHD):
        if os.environ.get("CI"):
            pytest.fail("openssh-server is not installed (scripts/setup --test installs it)")
        pytest.skip("openssh-server is not installed (scripts/setup --test installs it)")
    if os.geteuid() != 0:
        pytest.skip("the test sshd logs in as root (it needs to run as root)")
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    _keygen(base / "host_key")
    _keygen(base / "client_key")
    home = base / "home"
    home.mkdir()
    shutil.copy(base / "client_key.pub", base / "authorized_keys")
    port = _free_port()
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {(base / 'host_key.pub').read_text()}")
    (base / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
SetEnv HOME={home}
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = open(base / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([SSHD, "-f", str(base / "sshd_config"), "-D", "-e"], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("sshd did not start:\n" + (base / "sshd.log").read_text()) from None
            time.sleep(0.05)
    client = base / "client"
    env = {"XDG_CONFIG_HOME": str(client / "config"), "XDG_CACHE_HOME": str(client / "cache"),
           "LAYERBUILD_ROOT": str(client / "store")}
    for key in ("LAYERBUILD_HOST", "LAYERBUILD_MACHINE"):
        os.environ.pop(key, None)
    return SshHost(base, port, base / "client_key", base / "known_hosts", home, proc, env)


def stop_sshd(host: SshHost) -> None:
    subprocess.run(["ssh", "-o", f"ControlPath={_control_path()}/%C", "-p", str(host.port), "-O", "exit",
                    "root@127.0.0.1"], capture_output=True)
    host.proc.terminate()
    try:
        host.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        host.proc.kill()
        host.proc.wait()


def _control_path() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR")
    import tempfile

    return os.path.join(base, "layerbuild-ssh") if base and len(base) < 40 else os.path.join(
        tempfile.gettempdir(), f"layerbuild-ssh-{os.getuid()}")


@pytest.fixture(scope="session")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHost]:
    host = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield host
    finally:
        stop_sshd(host)


@pytest.fixture(scope="session")
def machine(ssh_host: SshHost) -> str:
    """A machine `m1` set up on the test sshd (dependencies sent along: tests reach no package index)."""
    ssh_host.layerbuild("machine", "create", "m1", "--ssh", ssh_host.spec, *ssh_host.ssh_opts(), "--no-index")
    return "m1"
