"""Login, host-key and version problems are clear errors with a hint (a real sshd, real ssh)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import layerbuild
from tests.remote.sshd import SshHost

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A master connection that another test left to this host would carry these logins past their checks.
NO_MASTER = ("--ssh-opt", "ControlPath=none")


def _clean_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 1, proc.stderr
    assert "\nerror: " in "\n" + proc.stderr, proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_a_wrong_key_is_a_login_error_with_a_hint(ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    proc = ssh_host.layerbuild("machine", "create", "wrongkey", "--ssh", ssh_host.spec, "--identity", str(other),
                               "--ssh-opt", f"UserKnownHostsFile={ssh_host.known_hosts}", *NO_MASTER, "--no-index",
                               check=False)
    _clean_error(proc)
    assert f"{ssh_host.url} refused the login" in proc.stderr
    assert "--identity" in proc.stderr and "authorized_keys" in proc.stderr
    assert "wrongkey" not in ssh_host.layerbuild("machine", "ls").stdout  # nothing recorded


def test_an_unknown_host_key_is_an_error_with_a_hint(ssh_host: SshHost, machine: str, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = ssh_host.layerbuild("machine", "create", "unknownkey", "--ssh", ssh_host.spec, "--identity",
                               str(ssh_host.key), "--ssh-opt", f"UserKnownHostsFile={empty}", *NO_MASTER, "--no-index",
                               check=False)
    _clean_error(proc)
    assert f"the host key of {ssh_host.url} is not known" in proc.stderr
    assert "StrictHostKeyChecking=accept-new" in proc.stderr


def test_a_changed_host_key_is_an_error_that_says_so(ssh_host: SshHost, tmp_path: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{ssh_host.port} {(tmp_path / 'other_host_key.pub').read_text()}")
    proc = ssh_host.layerbuild("machine", "create", "changed", "--ssh", ssh_host.spec, "--identity",
                               str(ssh_host.key), "--ssh-opt", f"UserKnownHostsFile={known}", *NO_MASTER, "--no-index",
                               check=False)
    _clean_error(proc)
    assert "has changed" in proc.stderr


def test_no_ssh_server_is_a_clear_error(ssh_host: SshHost) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = ssh_host.layerbuild("--host", f"ssh://root@127.0.0.1:{port}", "images", check=False)
    _clean_error(proc)
    assert "refused the connection" in proc.stderr


def test_a_version_mismatch_says_which_side_to_upgrade(ssh_host: SshHost, machine: str) -> None:
    (init,) = (ssh_host.home / ".local/share/layerbuild-machine/venv/").glob("lib/python3*/site-packages/layerbuild/__init__.py")
    text = init.read_text()
    init.write_text(re.sub(r'__version__ = "[^"]+"', '__version__ = "0.0.1"', text))
    proc = ssh_host.layerbuild("--machine", machine, "images", check=False)
    _clean_error(proc)
    assert f"runs layerbuild 0.0.1, older than this client's {layerbuild.__version__}" in proc.stderr
    assert f"layerbuild machine upgrade {machine}" in proc.stderr
    rows = json.loads(ssh_host.layerbuild("machine", "ls", "--json").stdout)
    assert [r["state"] for r in rows if r["name"] == machine] == ["outdated"]

    init.write_text(re.sub(r'__version__ = "[^"]+"', '__version__ = "99.0.0"', text))
    proc = ssh_host.layerbuild("--machine", machine, "images", check=False)
    _clean_error(proc)
    assert f"runs layerbuild 99.0.0, newer than this client's {layerbuild.__version__}" in proc.stderr
    assert "upgrade layerbuild here to 99.0.0" in proc.stderr

    out = ssh_host.layerbuild("machine", "upgrade", machine, "--no-index")
    assert f"machine {machine} runs layerbuild {layerbuild.__version__}" in out.stdout
    ssh_host.layerbuild("--machine", machine, "images")
