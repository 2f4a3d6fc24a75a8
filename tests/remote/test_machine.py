"""`machine create/ls/env/ssh/rm/upgrade` against a real sshd on loopback."""

from __future__ import annotations

import json

import pytest

from tests.remote.sshd import SshHost

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_create_records_the_machine_and_ls_shows_it_running(ssh_host: SshHost, machine: str) -> None:
    records = json.loads((ssh_host.dir / "client" / "config" / "layerbuild" / "machines.json").read_text())
    (entry,) = [m for m in records["machines"] if m["name"] == machine]
    assert entry["url"] == ssh_host.url
    assert entry["identity"] == str(ssh_host.key)
    assert entry["options"] == {"UserKnownHostsFile": str(ssh_host.known_hosts)}
    assert (ssh_host.home / ".local/share/layerbuild-machine/venv/bin/layerbuild").exists()
    rows = json.loads(ssh_host.layerbuild("machine", "ls", "--json").stdout)
    (row,) = [r for r in rows if r["name"] == machine]
    assert row["state"] == "running"
    assert row["version"] == __import__("layerbuild").__version__
    assert isinstance(row["store_size"], int)
    text = ssh_host.layerbuild("machine", "ls").stdout
    assert text.splitlines()[0].split() == ["NAME", "ACTIVE", "URL", "STATE", "VERSION", "STORE"]
    assert f"{machine} " in text and "running" in text


def test_env_prints_the_exports_and_unset(ssh_host: SshHost, machine: str) -> None:
    out = ssh_host.layerbuild("machine", "env", machine).stdout
    assert f"export LAYERBUILD_HOST={ssh_host.url}" in out.splitlines()
    assert f"export LAYERBUILD_MACHINE={machine}" in out.splitlines()
    assert "unset LAYERBUILD_HOST LAYERBUILD_MACHINE" in ssh_host.layerbuild("machine", "env", "--unset").stdout
    # what `eval $(layerbuild machine env m1)` gives: the next command runs on the host
    images = ssh_host.layerbuild("images", "--json", env={"LAYERBUILD_HOST": ssh_host.url})
    assert json.loads(images.stdout) == json.loads(
        ssh_host.layerbuild("--machine", machine, "images", "--json").stdout)


def test_ssh_runs_a_command_on_the_host(ssh_host: SshHost, machine: str) -> None:
    out = ssh_host.layerbuild("machine", "ssh", machine, "echo", "$HOME").stdout
    assert out.strip() == str(ssh_host.home)
    proc = ssh_host.layerbuild("machine", "ssh", machine, "exit", "3", check=False)
    assert proc.returncode == 3


def test_unknown_machine_is_a_clear_error(ssh_host: SshHost) -> None:
    proc = ssh_host.layerbuild("--machine", "nope", "images", check=False)
    assert proc.returncode == 2
    assert "no machine named 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_rm_forgets_and_purge_removes_the_installation(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.remote.sshd import start_sshd, stop_sshd

    host = start_sshd(tmp_path_factory.mktemp("sshd-rm"))
    try:
        host.layerbuild("machine", "create", "gone", "--ssh", host.spec, *host.ssh_opts(), "--no-index")
        host.layerbuild("--machine", "gone", "images")
        assert (host.home / ".local/share/layerbuild-machine").exists()
        out = host.layerbuild("machine", "rm", "--purge", "gone")
        assert "removed machine gone" in out.stdout
        assert not (host.home / ".local/share/layerbuild-machine").exists()
        assert json.loads(host.layerbuild("machine", "ls", "--json").stdout) == []
        proc = host.layerbuild("machine", "rm", "gone", check=False)
        assert proc.returncode == 2 and "no machine named 'gone'" in proc.stderr
    finally:
        stop_sshd(host)
