"""Helpers to run layerbuild as an unprivileged user created for the tests (rootless mode)."""

from __future__ import annotations

import os
import pwd
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

USER = "lbrootless"


def ensure_user() -> pwd.struct_passwd:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("creating a test user needs root and setpriv")
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


def with_usable_tun(cmd: list[str]) -> list[str]:
    """`cmd` (run as root) in a mount namespace of its own whose /dev/net/tun everyone may open, as
    Debian's udev rules make it, where the host's is root's only: a rootless default network needs it."""
    if os.path.exists("/dev/net/tun") and os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        return cmd
    setup = 'mount -t tmpfs -o mode=755 tmpfs /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", setup, "sh", *cmd]


def as_user(argv: list[str], env: dict[str, str], user: str = USER, **kw: object) -> subprocess.CompletedProcess[str]:
    cmd = ["setpriv", "--reuid", user, "--regid", user, "--init-groups", "--reset-env", "env", *(f"{k}={v}" for k, v in env.items()), *argv]
    cmd = with_usable_tun(cmd)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload, no-any-return]


def python_for_user(home: Path, user: str = USER) -> tuple[str, dict[str, str]]:
    """An interpreter the user may execute, and an environment in which it imports this checkout."""
    paths = [str(REPO), *site.getsitepackages()]
    env = {"PYTHONPATH": ":".join(paths), "HOME": str(home), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "LAYERBUILD_DAEMON": "0"}  # (the environment is reset: the suite's own setting does not reach it)
    same = f"python{sys.version_info.major}.{sys.version_info.minor}"  # the venv's compiled extensions
    for candidate in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{same}", f"/usr/local/bin/{same}"):
        if candidate and as_user([candidate, "-c", "import layerbuild.runtime, zstandard"], env, user).returncode == 0:
            return candidate, env
    pytest.skip("no Python interpreter that the unprivileged user can run with layerbuild importable")


@pytest.fixture(scope="session")
def rootless_home() -> Iterator[Path]:
    """A directory owned by the unprivileged user, outside root-only temp dirs."""
    user = ensure_user()
    home = Path(tempfile.mkdtemp(prefix="lb-rootless-"))
    os.chmod(home, 0o755)
    os.chown(home, user.pw_uid, user.pw_gid)
    yield home
    shutil.rmtree(home, ignore_errors=True)
