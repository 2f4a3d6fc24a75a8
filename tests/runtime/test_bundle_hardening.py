"""A bundle carries the sandbox's confinement: crun and runc apply its seccomp profile and masked paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from tests.runtime.test_bundle import _run

pytestmark = pytest.mark.integration

SCRIPT = ("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; unshare -U -r true && echo NESTED;"
          "cat /proc/keys | wc -c; mknod /tmp/b b 7 0; head -c 4 /tmp/b | wc -c")


@pytest.mark.parametrize("runtime", ["crun", "runc"])
def test_real_runtime_applies_the_profile(shared_root: Path, tmp_path: Path, runtime: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    exe = shutil.which(runtime)
    if exe is None:
        pytest.skip(f"{runtime} is not installed (apt-get install {runtime})")
    dest = tmp_path / "b"
    assert main(["--root", str(shared_root), "bundle", "busybox", str(dest), "sh", "-c", SCRIPT]) == 0
    capsys.readouterr()
    seccomp = json.loads((dest / "config.json").read_text())["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ERRNO" and not any("includes" in s for s in seccomp["syscalls"])
    proc = _run([exe, "--root", str(tmp_path / "state"), "run", "--bundle", str(dest), f"lb-sec-{runtime}"])
    assert "Seccomp:\t2" in proc.stdout and "NoNewPrivs:\t1" in proc.stdout, (proc.stdout, proc.stderr)
    assert "NESTED" not in proc.stdout, proc.stdout
    # The bundle's device allow-list (the cgroup device controller, applied by the runtime) keeps a
    # node made inside closed.
    assert proc.stdout.split()[-2:] == ["0", "0"], (proc.stdout, proc.stderr)
