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


# --- Platforms of images, matched as containerd's `platforms` package matches them ------------------

# A platform as three strings: (os, architecture, variant); "" for no variant.
PlatformSpec = tuple[str, str, str]

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "i386": "386", "aarch64": "arm64", "armhf": "arm",
                 "armel": "arm"}


def normalize_platform(os_: str, arch: str, variant: str = "") -> PlatformSpec:
    """containerd's Normalize: `aarch64` is arm64 (and its v8 no variant), `x86_64` amd64 (v1 none),
    `arm` without a variant is arm/v7, `armhf` arm/v7, `armel` arm/v6; a bare `7` is `v7`."""
    os_, arch, variant = os_.lower(), arch.lower(), variant.lower()
    if os_ == "macos":
        os_ = "darwin"
    if arch == "armhf":
        variant = variant or "v7"
    elif arch == "armel":
        variant = variant or "v6"
    arch = _ARCH_ALIASES.get(arch, arch)
    if variant and variant[0].isdigit():
        variant = "v" + variant
    if (arch, variant) in (("arm64", "v8"), ("amd64", "v1")):
        variant = ""
    elif arch == "arm" and not variant:
        variant = "v7"
    return os_, arch, variant


def parse_platform(text: str) -> PlatformSpec:
    """`linux/arm64`, `linux/arm/v7`, `arm64` (os linux), normalised; ValueError if it is none of those."""
    parts = text.strip().split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"invalid platform {text!r}: write OS/ARCH[/VARIANT], e.g. linux/arm64")
    if len(parts) == 1:
        parts = ["linux", *parts]
    os_, arch = parts[0], parts[1]
    return normalize_platform(os_, arch, parts[2] if len(parts) == 3 else "")


def format_platform(spec: PlatformSpec) -> str:
    return "/".join(p for p in spec if p)


def host_platform() -> PlatformSpec:
    """This machine's platform (arm machines: the variant their kernel reports)."""
    machine = os.uname().machine
    if machine.startswith("armv") and machine[4:5].isdigit():
        return normalize_platform("linux", "arm", "v" + machine[4])
    return normalize_platform("linux", host_arch())


def compatible_platforms(want: PlatformSpec) -> list[PlatformSpec]:
    """What an image for `want` may be, best first, as containerd's platformVector orders it:
    amd64/vN down to amd64, then 386; arm64, then arm/v8 down to arm/v5; arm/vN down to arm/v5."""
    os_, arch, variant = normalize_platform(*want)
    out: list[PlatformSpec] = [(os_, arch, variant)]
    if arch == "amd64":
        level = int(variant[1:]) if variant[1:].isdigit() else 1
        out += [(os_, "amd64", f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)]
        out.append((os_, "386", ""))
    elif arch == "arm64":
        out += [(os_, "arm", f"v{n}") for n in range(8, 4, -1)]
    elif arch == "arm" and variant[1:].isdigit():
        out += [(os_, "arm", f"v{n}") for n in range(int(variant[1:]) - 1, 4, -1)]
    return list(dict.fromkeys(out))


def best_platform(want: PlatformSpec, candidates: list[PlatformSpec]) -> int | None:
    """The position in `candidates` of the best match for `want` (see compatible_platforms), or None."""
    ranked = compatible_platforms(want)
    best: tuple[int, int] | None = None
    for i, cand in enumerate(candidates):
        norm = normalize_platform(*cand)
        if norm in ranked:
            rank = ranked.index(norm)
            if best is None or rank < best[0]:
                best = (rank, i)
    return None if best is None else best[1]


def runnable(spec: PlatformSpec) -> bool:
    """Whether this machine runs programs of platform `spec` (its own, and what containerd counts as
    compatible with it: 386 on amd64, arm/v5..v8 on arm64)."""
    return normalize_platform(*spec) in compatible_platforms(host_platform())
