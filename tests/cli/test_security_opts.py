"""`layerbuild run` confinement through the CLI: the device escape, `--security-opt seccomp=...`, no_new_privs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.kit import busybox_root, lb

pytestmark = pytest.mark.integration

NESTED = "unshare -U -r -m sh -c 'mount -t tmpfs t /tmp && echo MOUNTED'"
STATUS = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with busybox_root("lb-cli-security-",
                      skip_rootless="runs as root (rootless is covered in tests/runtime/test_hardening.py)") as root:
        yield root


def test_run_root_cannot_read_a_device_it_makes(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # The reproduction (the host's hardware RNG, 10:183), and /dev/zero's 1:5 that every host has.
    script = "mknod /tmp/h c 10 183; mknod /tmp/z c 1 5; head -c 4 /tmp/h | wc -c; head -c 4 /tmp/z | wc -c"
    _code, out, err = lb(root, capfd, "run", "--rm", "busybox", "sh", "-c", script)
    assert out.split() == ["0", "0"], (out, err)
    assert err.count("Permission denied") == 2 or "No such device" in err, err


def test_store_root_is_private(root: Path) -> None:
    for path in (root, root / "tmp", root / "snapshots"):
        assert not path.stat().st_mode & 0o077, path


def test_seccomp_unconfined_and_default(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = lb(root, capfd, "run", "--rm", "busybox", "sh", "-c", NESTED)
    assert code != 0 and "MOUNTED" not in out and "Operation not permitted" in err, (out, err)
    code, out, err = lb(root, capfd, "run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "sh", "-c", NESTED)
    assert code == 0 and "MOUNTED" in out, (out, err)


def test_seccomp_profile_file(root: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    code, out, err = lb(root, capfd, "run", "--rm", "--security-opt", f"seccomp={profile}", "busybox",
                        "sh", "-c", "mkdir /x && echo MADE")
    assert code != 0 and "MADE" not in out and "Operation not permitted" in err, (out, err)
    # The profile allows everything else, the default profile's refusals included.
    code, out, err = lb(root, capfd, "run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "sh", "-c", NESTED)
    assert code == 0 and "MOUNTED" in out, (out, err)


@pytest.mark.parametrize(("opt", "message"), [
    ("seccomp=/nonexistent/profile.json", "cannot read the profile"),
    ("seccomp=BAD", "not valid JSON"),
    ("apparmor=unconfined", "unsupported --security-opt"),
])
def test_bad_security_opts(root: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path, opt: str,
                           message: str) -> None:
    if opt == "seccomp=BAD":
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        opt = f"seccomp={bad}"
    code, _out, err = lb(root, capfd, "run", "--rm", "--security-opt", opt, "busybox", "true")
    assert code == 125 and message in err and "hint:" in err and "Traceback" not in err, err


def test_no_new_privileges_switch(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _, out, _ = lb(root, capfd, "run", "--rm", "-u", "1000", "busybox", "sh", "-c", STATUS)
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out, out
    _code, out, err = lb(root, capfd, "run", "--rm", "-u", "1000", "--security-opt", "no-new-privileges=false",
                        "busybox", "sh", "-c", f"{STATUS}; {NESTED}")
    assert "NoNewPrivs:\t0" in out and "Seccomp:\t2" in out and "MOUNTED" not in out, (out, err)
