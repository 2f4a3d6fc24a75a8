"""OCI runtime bundles: `config.json` (opencontainers/runtime-spec) plus `rootfs/`, for crun and runc."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerbuild.errors import UsageError
from layerbuild.image import StoredImage
from layerbuild.image.export import remove_device_nodes
from layerbuild.layer import apply_layer
from layerbuild.platforms import DEFAULT_PATH
from layerbuild.runtime.merged import MergedView
from layerbuild.runtime.runner import command_for
from layerbuild.runtime.seccomp import runtime_spec
from layerbuild.runtime.users import resolve_user
from layerbuild.store import Store

OCI_VERSION = "1.0.2"
# Docker's default capability set, the same that nsinit keeps.
CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
        "CAP_KILL", "CAP_AUDIT_WRITE"]
MASKED = ["/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
          "/sys/devices/virtual/powercap"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _mounts(rootless: bool) -> list[dict[str, Any]]:
    pts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] + ([] if rootless else ["gid=5"])
    sys_mount: dict[str, Any] = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                                 "options": ["nosuid", "noexec", "nodev", "ro"]}
    if rootless:  # sysfs cannot be mounted from a user namespace that does not own the network namespace
        sys_mount = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": pts},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        sys_mount,
    ]


def bundle_config(image: StoredImage, rootfs: Path, args: Sequence[str] = (), *, rootless: bool | None = None,
                  hostname: str = "layerbuild") -> dict[str, Any]:
    """The runtime-spec config for running `image` (its Entrypoint/Cmd, Env, WorkingDir, User)."""
    cfg = image.config.config
    rootless = os.geteuid() != 0 if rootless is None else rootless
    argv = command_for(cfg.entrypoint, cfg.cmd, args)
    env = list(cfg.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, f"PATH={DEFAULT_PATH}")
    user = resolve_user(MergedView([rootfs]), cfg.user)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": MASKED,
        "readonlyPaths": READONLY,
        "seccomp": runtime_spec(None, CAPS),  # the profile `layerbuild run` applies
    }
    if rootless:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": list(user.groups)} if user.groups else {})},
            "args": argv,
            "env": env,
            "cwd": cfg.working_dir or "/",
            "capabilities": {k: CAPS for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(rootless),
        "linux": linux,
    }


def write_bundle(store: Store, image: StoredImage, dest: Path, args: Sequence[str] = (), *,
                 devices: bool = False, skipped: list[str] | None = None) -> Path:
    """Write `dest/config.json` and `dest/rootfs/` (the image's layers applied in order).

    The image's device nodes are left out unless `devices`; their paths are added to `skipped`. The
    layers are applied in a private directory, so no node is reachable before it is removed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    rootfs = dest / "rootfs"
    if rootfs.exists() and any(rootfs.iterdir()):
        raise UsageError(f"{rootfs} is not empty", hint="give a new or empty directory")
    holder = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=dest))  # 0700
    try:
        staging = holder / "rootfs"
        staging.mkdir()
        for layer in image.layers:
            with store.reading_blob(layer.digest) as blob:
                apply_layer(blob, staging)
        removed = () if devices else remove_device_nodes(staging)
        if skipped is not None:
            skipped.extend(removed)
        if rootfs.exists():
            rootfs.rmdir()
        os.rename(staging, rootfs)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    config = bundle_config(image, rootfs, args)
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dest
