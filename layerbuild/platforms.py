"""The platform this machine builds for, as OCI and BuildKit's automatic ARGs spell it (imports nothing of ours)."""

from __future__ import annotations

import os

# BuildKit gives a process this PATH when its environment has none (system.DefaultPathEnv, Linux).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_arch() -> str:
    # os.uname(), which platform.machine() reads too: importing `platform` costs a no-op build ~7 ms.
    machine = os.uname().machine
    return _ARCH.get(machine, machine)


def host_platform_args() -> dict[str, str]:
    """BuildKit's automatic platform ARGs, for a build on and for this machine."""
    arch = host_arch()
    plat = f"linux/{arch}"
    return {
        "BUILDPLATFORM": plat, "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": "",
        "TARGETPLATFORM": plat, "TARGETOS": "linux", "TARGETARCH": arch, "TARGETVARIANT": "",
    }  # fmt: skip
