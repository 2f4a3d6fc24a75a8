"""OCI runtime bundles from a stored image, run by the real crun and runc."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.image import resolve_image, write_image
from layerbuild.runtime.bundle import OCI_VERSION
from layerbuild.store import Store

pytestmark = pytest.mark.integration

SCRIPT = 'echo "hello $GREETING from $(hostname) as $(id -u) in $(pwd) pid $$"; grep -c : /proc/net/dev'
EXPECTED = "hello bundle from layerbuild as 1000 in /tmp pid 1\n1\n"


@pytest.fixture
def bundle(shared_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    with Store.open(shared_root) as store:
        image = resolve_image(store, "busybox")
        config = image.config.with_config(entrypoint=("/bin/sh", "-c"), cmd=("exit 3",), user="app",
                                          env=("GREETING=bundle",), working_dir="/tmp")
        write_image(store, config, ["bundled"])
    dest = tmp_path / "bundle"
    assert main(["--root", str(shared_root), "bundle", "bundled", str(dest), SCRIPT]) == 0
    capsys.readouterr()
    return dest


def test_config_follows_the_runtime_spec(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    assert config["ociVersion"] == OCI_VERSION and config["root"] == {"path": "rootfs", "readonly": False}
    process = config["process"]
    assert process["args"] == ["/bin/sh", "-c", SCRIPT]
    assert process["user"]["uid"] == 1000 and process["user"]["gid"] == 1000 and process["cwd"] == "/tmp"
    assert process["env"][0].startswith("PATH=") and "GREETING=bundle" in process["env"]
    assert {n["type"] for n in config["linux"]["namespaces"]} >= {"pid", "mount", "ipc", "uts", "network"}
    assert {m["destination"] for m in config["mounts"]} >= {"/proc", "/dev", "/dev/pts", "/dev/shm"}
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if "hybrid mode not supported" in proc.stderr and shutil.which("unshare"):
        # crun refuses hosts that mount cgroup v1 and v2 side by side with controllers on v2; hide v2
        # in a private mount namespace so it sees plain v1 (the bundle itself is the same).
        script = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"'
        proc = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *argv],
                              capture_output=True, text=True, timeout=30)
    return proc


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_real_runtime_runs_the_bundle(bundle: Path, tmp_path: Path, runtime: str) -> None:
    exe = shutil.which(runtime)
    if exe is None:
        pytest.skip(f"{runtime} is not installed (apt-get install {runtime})")
    state = tmp_path / f"{runtime}-state"
    state.mkdir()
    proc = _run([exe, "--root", str(state), "run", "--bundle", str(bundle), f"lb-test-{runtime}"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED


def test_exit_status_comes_through(shared_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe = shutil.which("runc")
    if exe is None:
        pytest.skip("runc is not installed")
    dest = tmp_path / "b"
    assert main(["--root", str(shared_root), "bundle", "busybox", str(dest), "sh", "-c", "exit 7"]) == 0
    capsys.readouterr()
    proc = _run([exe, "--root", str(tmp_path / "state"), "run", "--bundle", str(dest), "lb-exit"])
    assert proc.returncode == 7
