"""Setting a host up: check it can build (Linux, Python ≥ 3.11, namespaces, overlayfs, root or subuids),
then install this very layerbuild into a private virtual environment there."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError
from layerbuild.remote import ssh
from layerbuild.remote.machines import INSTALL_DIR
from layerbuild.remote.ssh import SshTarget
from layerbuild.remote.wheels import Wheel, dependency_wheels, layerbuild_wheel


class HostCheckError(LayerbuildError):
    """The host cannot run layerbuild builds."""


# Prints one JSON object; run by the host's `python3`, so it needs nothing but the standard library.
_CHECK = r"""
import json, os, platform, shutil, subprocess, sys
out = {"system": platform.system(), "python": ".".join(map(str, sys.version_info[:3])),
       "machine": platform.machine(), "uid": os.getuid(), "user": os.environ.get("USER") or str(os.getuid())}
try:
    out["overlay"] = "overlay" in open("/proc/filesystems").read()
except OSError:
    out["overlay"] = False
try:
    import venv, ensurepip
    out["venv"] = True
except ImportError:
    out["venv"] = False
cmd = ["unshare", "--mount", "--pid", "--fork", "--uts", "--ipc"]
if os.getuid() != 0:
    cmd += ["--user", "--map-root-user"]
    import pwd
    name = pwd.getpwuid(os.getuid()).pw_name
    try:
        out["subuids"] = any(line.split(":")[0] in (name, str(os.getuid())) for line in open("/etc/subuid"))
    except OSError:
        out["subuids"] = False
if shutil.which("unshare"):
    proc = subprocess.run(cmd + ["true"], capture_output=True, text=True)
    out["namespaces"] = proc.returncode == 0
    out["namespaces_error"] = proc.stderr.strip()[-300:]
else:
    out["namespaces"] = None
print(json.dumps(out))
"""


@dataclass(frozen=True)
class HostFacts:
    system: str
    python: str
    uid: int
    rootless: bool


def check_host(target: SshTarget) -> HostFacts:
    """What the host is, or HostCheckError naming what it lacks."""
    proc = ssh.run(target, "command -v python3 >/dev/null || { echo 'no python3' >&2; exit 3; }; exec python3 -",
                   input=_CHECK.encode(), check=False, timeout=120)
    if proc.returncode == 3:
        raise HostCheckError(f"{target.url} has no python3", hint="install Python 3.11 or newer there "
                             "(Debian: apt-get install python3 python3-venv)")
    if proc.returncode != 0:
        raise HostCheckError(f"checking {target.url} failed: {proc.stderr.decode(errors='replace').strip()[-400:]}")
    facts = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    if facts["system"] != "Linux":
        raise HostCheckError(f"{target.url} runs {facts['system']}, not Linux",
                             hint="builds need Linux namespaces and overlayfs")
    version = tuple(int(p) for p in facts["python"].split(".")[:2])
    if version < (3, 11):
        raise HostCheckError(f"{target.url} has Python {facts['python']}; layerbuild needs 3.11 or newer",
                             hint="install a newer python3 there")
    if not facts["venv"]:
        raise HostCheckError(f"{target.url}'s Python cannot make virtual environments",
                             hint="install python3-venv there (Debian: apt-get install python3-venv)")
    if facts["namespaces"] is False:
        raise HostCheckError(f"{target.url} cannot create namespaces: {facts.get('namespaces_error') or 'denied'}",
                             hint="builds need mount, PID, UTS and IPC namespaces (as non-root: user namespaces, "
                                  "e.g. sysctl kernel.unprivileged_userns_clone=1)")
    rootless = facts["uid"] != 0
    if rootless and not facts.get("subuids"):
        raise HostCheckError(f"{facts['user']} on {target.url} is not root and has no subordinate ids",
                             hint="log in as root, or give the user a range in /etc/subuid and /etc/subgid "
                                  "(usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER)")
    if not facts["overlay"]:
        raise HostCheckError(f"{target.url}'s kernel has no overlayfs", hint="load it: modprobe overlay")
    return HostFacts(facts["system"], facts["python"], facts["uid"], rootless)


def _tar_of(wheels: list[Wheel]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for wheel in wheels:
            tar.add(wheel.path, arcname=wheel.path.name)
    return buf.getvalue()


def install(target: SshTarget, *, use_index: bool, say: Callable[[str], None]) -> str:
    """Install this layerbuild on the host (a fresh venv under INSTALL_DIR); the version installed."""
    with tempfile.TemporaryDirectory(prefix="layerbuild-wheels-") as tmp:
        dest = Path(tmp)
        own = layerbuild_wheel(dest)
        deps = [] if use_index else dependency_wheels(dest)
        wheels = [own, *deps]
        say(f"sending {len(wheels)} wheel{'s' if len(wheels) != 1 else ''} "
            f"({sum(w.path.stat().st_size for w in wheels) // 1024} kB)")
        d = f'"$HOME"/{INSTALL_DIR}'
        ssh.run(target, f"rm -rf {d}/wheels && mkdir -p {d}/wheels && tar -x -f - -C {d}/wheels",
                input=_tar_of(wheels), timeout=300)
    say("creating the virtual environment")
    # A venv cannot move (its scripts name its path): each install gets its own, and `venv` links to it.
    new = f"venv-{os.urandom(4).hex()}"
    ssh.run(target, f"python3 -m venv {d}/{new}", timeout=300)
    pip = f"{d}/{new}/bin/python -m pip install -q --disable-pip-version-check --no-warn-script-location"
    wheel = f"{d}/wheels/{own.path.name}"
    if use_index:
        say("installing (dependencies from the host's package index)")
        cmd = f"{pip} {wheel}"
    else:
        say("installing (dependencies sent along)")
        cmd = f"{pip} --no-index --find-links {d}/wheels {wheel}"
    proc = ssh.run(target, cmd, check=False, timeout=900)
    if proc.returncode != 0:
        ssh.run(target, f"rm -rf {d}/{new}", check=False)
        text = proc.stderr.decode(errors="replace").strip()[-800:]
        hint = ("the host could not reach a package index: try --no-index (the dependencies are sent along)"
                if use_index else "the wheels sent are built for this machine's Python and platform; "
                "let the host use its package index (without --no-index)")
        raise HostCheckError(f"installing layerbuild on {target.url} failed: {text}", hint=hint)
    # The new environment replaces the old one only once it works.
    ssh.run(target, f"{d}/{new}/bin/layerbuild --version >/dev/null && ln -sfn {new} {d}/venv.tmp && "
                    f"mv -T {d}/venv.tmp {d}/venv && rm -rf {d}/wheels && "
                    f"for old in {d}/venv-*; do [ \"$old\" = {d}/{new} ] || rm -rf \"$old\"; done",
            timeout=120)
    return own.version


def purge(target: SshTarget, store_root: str | None) -> None:
    """Remove the installation (and the store at `store_root`) from the host."""
    parts = [f'rm -rf "$HOME"/{INSTALL_DIR}']
    if store_root:
        parts.append(f"rm -rf {ssh.quote(store_root)}")
    ssh.run(target, " && ".join(parts), timeout=600)
