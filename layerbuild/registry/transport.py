"""How the client reaches a registry: TLS (per-registry CAs and client certificates from certs.d), when
plain HTTP is allowed, and when and how long to wait before a retry."""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import RegistryError
from layerbuild.registry import wire

CERTS_DIRS_ENV = "LAYERBUILD_CERTS_DIRS"  # colon-separated; replaces the two directories below
DEFAULT_CERTS_DIRS = ("/etc/docker/certs.d", "/etc/containers/certs.d")
INSECURE_ENV = "LAYERBUILD_INSECURE_REGISTRIES"  # comma-separated HOST[:PORT]
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def certs_dirs() -> list[Path]:
    env = os.environ.get(CERTS_DIRS_ENV)
    return [Path(p) for p in (env.split(":") if env is not None else DEFAULT_CERTS_DIRS) if p]


def _host_only(host: str) -> str:
    """`127.0.0.1:5000` → `127.0.0.1`; `[::1]:5000` → `::1`."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 and ::1, with or without a port."""
    name = _host_only(host).lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_from_env() -> set[str]:
    return {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}


def named_insecure(host: str, insecure: Iterable[str]) -> bool:
    """Whether the user named `host` insecure (HOST:PORT, or HOST for every port of it)."""
    names = set(insecure)
    return host in names or _host_only(host) in names


def tls_context(host: str, *, verify: bool = True, dirs: list[Path] | None = None) -> ssl.SSLContext:
    """A verifying TLS context for `host`: the system's CAs, plus `*.crt` CAs and `*.cert`/`*.key` client
    pairs from `<certs.d>/<host>/`, as docker reads them. `verify=False` only for registries named insecure."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for base in dirs if dirs is not None else certs_dirs():
        d = base / host
        if not d.is_dir():
            continue
        for entry in sorted(d.iterdir()):
            try:
                if entry.name.endswith(".crt"):
                    ctx.load_verify_locations(cafile=str(entry))
                elif entry.name.endswith(".cert"):
                    key = entry.with_name(entry.name[: -len(".cert")] + ".key")
                    if not key.is_file():
                        raise RegistryError(f"client certificate {entry} has no key {key.name} beside it",
                                            hint="docker's certs.d layout pairs NAME.cert with NAME.key")
                    ctx.load_cert_chain(str(entry), str(key))
                elif entry.name.endswith(".key"):
                    cert = entry.with_name(entry.name[: -len(".key")] + ".cert")
                    if not cert.is_file():
                        raise RegistryError(f"client key {entry} has no certificate {cert.name} beside it",
                                            hint="docker's certs.d layout pairs NAME.cert with NAME.key")
            except (ssl.SSLError, OSError) as exc:
                raise RegistryError(f"cannot use {entry} for {host}: {exc}",
                                    hint="certs.d holds PEM files: CA.crt, client.cert and client.key") from None
    return ctx


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of requests that failed in a way that may pass: 408/429/5xx answers and lost connections.

    `attempts` counts the first try; waits grow from `base` doubling to `cap` seconds with jitter, and a
    `Retry-After` answer is honoured up to `max_retry_after` seconds (longer waits fail at once).
    """

    attempts: int = 5
    base: float = 0.25
    cap: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, response: wire.Response | None = None) -> float | None:
        """Seconds to wait before try `attempt + 1` (0-based `attempt` just failed), or None: give up."""
        if attempt + 1 >= self.attempts:
            return None
        if response is not None and (after := retry_after(response)) is not None:
            return float(after) if after <= self.max_retry_after else None
        wait = min(self.cap, self.base * 2.0 ** attempt)
        return wait * (0.5 + random.random() / 2)


def retry_after(response: wire.Response) -> float | None:
    """The wait a `Retry-After` header asks for (seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retryable_transport_error(exc: wire.TransportError) -> bool:
    """A connection that dropped or stalled may work on a new try; a refused one, a bad name or TLS won't."""
    from layerbuild.registry.failures import client_certificate_refused

    if isinstance(exc, wire.ConnectError) or client_certificate_refused(exc):
        return False
    return isinstance(exc, wire.NetworkError | wire.TimeoutException | wire.RemoteProtocolError)

