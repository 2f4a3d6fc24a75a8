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

`--add-host NAME:IP` entries (docker's spellings, checked with docker's words) are appended to the
container's /etc/hosts. `host-gateway` stands for the host's first non-loopback IPv4 address (the
address podman gives `host.containers.internal` when the host's loopback is not reachable), in every
mode: the default network reaches it through slirp4netns, `host` is on it, and `none` writes it like
Docker does although nothing is reachable there.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerbuild.errors import UsageError
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


def hosts_file(mode: Network, hostname: str, extra: Sequence[tuple[str, str]] = ()) -> str:
    """/etc/hosts: the host's with `host`; else localhost. Then the `extra` (name, address) pairs
    (`--add-host`), and the hostname at the container's address last, in Docker's order."""
    added = "".join(f"{ip}\t{name}\n" for name, ip in extra)
    if mode == "host":
        text = LOCALHOST
        with contextlib.suppress(OSError):
            text = Path("/etc/hosts").read_text()
        if text and not text.endswith("\n"):
            text += "\n"
        return text + added + f"127.0.1.1\t{hostname}\n"
    return LOCALHOST + added + f"{GUEST_ADDRESS if mode == 'default' else '127.0.1.1'}\t{hostname}\n"


HOST_GATEWAY = "host-gateway"
_ADD_HOST_HINT = "write --add-host NAME:IP or NAME=IP (IPv6 in brackets or not), or NAME:host-gateway"


def parse_add_host(text: str) -> tuple[str, str]:
    """docker's `--add-host NAME:IP` (also `NAME=IP`, `NAME:[IPv6]`, `NAME:host-gateway`) as
    (name, address as written, brackets and surrounding blanks removed); UsageError in docker's words.

    As docker's, the value is cut at the first `=`, else at the first `:` (so `h:::1` is `::1`);
    a name may not hold a `:`. Names with white space or control characters are refused as well:
    they would write more than one entry into /etc/hosts."""
    name, sep, value = text.partition("=")
    if not sep:
        name, sep, value = text.partition(":")
    if not sep or not name or ":" in name or any(ch.isspace() or ord(ch) < 32 or ch in "#\x7f" for ch in name):
        raise UsageError(f"bad format for add-host: {_go_quote(text)}", hint=_ADD_HOST_HINT)
    if value == HOST_GATEWAY:
        return name, value
    if len(value) > 2 and value[0] == "[" and value[-1] == "]":
        value = value[1:-1]
    if parse_ip(value.strip()) is None:
        raise UsageError(f"invalid IP address in add-host: {_go_quote(value)}", hint=_ADD_HOST_HINT)
    return name, value.strip()


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as Go's net.ParseIP reads one (no zone, no leading zeros in IPv4), or None."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def canonical_ip(text: str) -> str:
    """An address in the form Go's `net.IP.String()` prints it (BuildKit writes extra hosts so):
    IPv6 compressed and lower case, an IPv4-mapped IPv6 address as IPv4."""
    ip = parse_ip(text)
    if ip is None:
        raise UsageError(f"invalid IP address in add-host: {_go_quote(text)}", hint=_ADD_HOST_HINT)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def host_gateway_address() -> str:
    """What `host-gateway` maps to: the host's first non-loopback, non-link-local IPv4 address, in
    the order of the host's interfaces; UsageError when it has none."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocgifaddr, iff_up, iff_loopback = 0x8913, 0x8915, 0x1, 0x8
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("16s24s", os.fsencode(name)[:15], b"")
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(sock, siocgifflags, request), 16)[0]
                if not flags & iff_up or flags & iff_loopback:
                    continue
                answer = fcntl.ioctl(sock, siocgifaddr, request)  # struct ifreq: sockaddr_in at 16
            except OSError:
                continue  # no IPv4 address on this interface
            address = ipaddress.IPv4Address(answer[20:24])
            if not (address.is_loopback or address.is_link_local or address.is_unspecified):
                return str(address)
    raise UsageError("--add-host NAME:host-gateway: this machine has no non-loopback IPv4 address",
                     hint="give the address to use instead of host-gateway (--add-host NAME:IP)")


def _go_quote(text: str) -> str:
    """`text` quoted as Go's %q quotes it (what docker's messages show)."""
    return json.dumps(text, ensure_ascii=False)


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
