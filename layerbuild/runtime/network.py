"""The network modes of a sandbox: what each one reaches, the user-mode network helper and /etc files.

- `default`: a network namespace of its own, connected to the outside by slirp4netns (user-mode
  TCP/IP in a process outside the namespaces). Outbound connections work as the host's own; the
  host's loopback is not reachable (`--disable-host-loopback`), nor is anything listening in the
  container reachable from outside. DNS goes to slirp4netns's built-in forwarder (10.0.2.3), which
  asks the host's resolvers, those on 127.0.0.x included.
- `none`: a network namespace with only loopback.
- `host`: the host's network namespace, its loopback services included.

`nsinit.py` starts slirp4netns itself (it must run outside the namespaces and know their pid); this
module only finds the binary and says how to call it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from layerbuild.runtime.spec import Network, SandboxError

SLIRP_ENV = "LAYERBUILD_SLIRP4NETNS"
# slirp4netns's fixed layout of 10.0.2.0/24 (`--configure`).
GUEST_ADDRESS = "10.0.2.100"
GATEWAY = "10.0.2.2"
NAMESERVER = "10.0.2.3"
# The largest MTU slirp4netns allows; far fewer, larger packets make bulk transfers several times faster.
MTU = 65520
TUN = "/dev/net/tun"  # slirp4netns makes its tap device in the namespace through it
LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def find_slirp4netns() -> str:
    """The slirp4netns binary ($LAYERBUILD_SLIRP4NETNS, else the PATH, else /usr/bin), or SandboxError."""
    configured = os.environ.get(SLIRP_ENV)
    found = configured if configured else shutil.which("slirp4netns") or shutil.which("slirp4netns", path="/usr/bin")
    if not found or not os.access(found, os.X_OK):
        where = f" ({SLIRP_ENV}={configured} is not an executable)" if configured else ""
        raise SandboxError(
            f"the default network needs slirp4netns, which is not installed{where}",
            hint="install it (apt-get install slirp4netns), or choose --network host (the host's network) "
                 "or --network none (no network)",
        )
    return os.path.abspath(found)


def helper_spec(mode: Network, work: Path) -> dict[str, Any] | None:
    """What `nsinit.py` needs to connect the namespace of `mode` (None: nothing to start)."""
    if mode != "default":
        return None
    path = find_slirp4netns()
    if os.geteuid() != 0 and not os.access(TUN, os.R_OK | os.W_OK):
        raise SandboxError(
            f"the default network needs {TUN}, which this user cannot open",
            hint=f"make it usable by everyone as Debian's udev rules do (chmod 0666 {TUN}), or choose "
                 "--network host (the host's network) or --network none (no network)",
        )
    return {"slirp4netns": path, "mtu": MTU, "log": os.fspath(work / "net" / "slirp4netns.log")}


def hosts_file(mode: Network, hostname: str) -> str:
    """/etc/hosts: the host's with `host`; else localhost, and the hostname at the container's address."""
    if mode == "host":
        text = LOCALHOST
        with contextlib.suppress(OSError):
            text = Path("/etc/hosts").read_text()
        if text and not text.endswith("\n"):
            text += "\n"
        return text + f"127.0.1.1\t{hostname}\n"
    return LOCALHOST + f"{GUEST_ADDRESS if mode == 'default' else '127.0.1.1'}\t{hostname}\n"


def resolv_conf(mode: Network, host_text: str | None = None) -> str:
    """/etc/resolv.conf for `mode`, from the host's (`host_text`, default: read /etc/resolv.conf).

    `host` keeps the host's file (loopback resolvers work there); `default` keeps its search and
    options lines and names slirp4netns's forwarder, which reaches every resolver the host uses;
    `none` has no nameserver."""
    if host_text is None:
        try:
            host_text = Path("/etc/resolv.conf").read_text()
        except OSError:
            host_text = ""
    if mode == "none":
        return ""
    if mode == "host":
        if any(line.split()[:1] == ["nameserver"] for line in host_text.splitlines()):
            return host_text if host_text.endswith("\n") else host_text + "\n"
        return "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"  # Docker's default when the host names none
    kept = [line for line in host_text.splitlines()
            if line.split()[:1] in (["search"], ["domain"], ["options"])]
    return "".join(f"{line}\n" for line in [f"nameserver {NAMESERVER}", *kept])
