"""A registry's errors in plain words with a hint: its error codes, HTTP statuses, TLS and connection failures."""

from __future__ import annotations

import json
import ssl

from layerbuild.errors import RegistryAuthError, RegistryError
from layerbuild.registry import wire

_MAX_DETAIL = 300


def registry_codes(response: wire.Response) -> list[tuple[str, str]]:
    """The `(code, message)` pairs of a distribution error body (`{"errors": [{"code", "message"}]}`)."""
    try:
        body = json.loads(response.content[:65536] or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    pairs = []
    for err in errors if isinstance(errors, list) else ():
        if isinstance(err, dict):
            pairs.append((str(err.get("code") or ""), str(err.get("message") or "")[:_MAX_DETAIL]))
    return pairs


def response_error(response: wire.Response, *, host: str, what: str, repository: str | None = None,
                   reference: str | None = None) -> RegistryError:
    """The error for a failed `response` to `what` (e.g. `GET manifest`); reads the body if unread."""
    try:
        response.read()
    except wire.HTTPError:
        pass
    codes = registry_codes(response)
    code = codes[0][0] if codes else ""
    said = codes[0][1] if codes else ""
    status = response.status_code
    repo = repository or "the repository"
    named = f"{repository}:{reference}" if repository and reference and not reference.startswith("sha256:") \
        else f"{repository}@{reference}" if repository and reference else repo
    login = f"log in with: layerbuild login {host}"
    if code == "UNAUTHORIZED" or (not code and status == 401):
        return RegistryAuthError(f"{host}: authentication required for {repo} ({what})",
                                 hint=f"{login}, or check that the name is right", code="UNAUTHORIZED", status=status)
    if code == "DENIED" or (not code and status == 403):
        return RegistryAuthError(f"{host}: access to {repo} denied ({what})",
                                 hint=f"your account may lack permission for this; {login}", code="DENIED",
                                 status=status)
    if code == "MANIFEST_UNKNOWN" or (not code and status == 404 and what.endswith("manifest")):
        return RegistryError(f"{host}: no such tag or manifest: {named}",
                             hint="check the tag or digest; the repository exists but has no such image",
                             code="MANIFEST_UNKNOWN", status=status)
    if code == "NAME_UNKNOWN":
        return RegistryError(f"{host}: repository {repo} does not exist", hint="check the image name",
                             code=code, status=status)
    if code == "BLOB_UNKNOWN" or (not code and status == 404 and "blob" in what):
        return RegistryError(f"{host}: blob {reference or ''} not found in {repo}".replace("  ", " "),
                             hint="the registry lacks a blob its manifest names", code="BLOB_UNKNOWN",
                             status=status)
    if code == "TOOMANYREQUESTS" or status == 429:
        return RegistryError(f"{host}: too many requests, the registry is rate-limiting ({what})",
                             hint=f"wait and try again; logged-in users often get a higher limit ({login})",
                             code="TOOMANYREQUESTS", status=status)
    if code in ("MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN", "DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_INVALID",
                "BLOB_UPLOAD_UNKNOWN", "NAME_INVALID", "TAG_INVALID", "UNSUPPORTED"):
        return RegistryError(f"{host}: {what} of {repo} refused: {code}" + (f": {said}" if said else ""),
                             code=code, status=status)
    detail = f"{code}: {said}" if code else f"HTTP {status} {response.reason_phrase}".strip()
    return RegistryError(f"{host}: {what} of {repo} failed: {detail}", code=code or None, status=status)


def transport_error(exc: Exception, *, host: str, what: str) -> RegistryError:
    """The error for a request to `host` that got no answer: TLS, a refused or lost connection, a timeout."""
    text = str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cause):
            reason = getattr(cause, "verify_message", None) or "certificate verify failed"
            return RegistryError(
                f"{host}: TLS certificate not trusted ({reason})",
                hint=f"put the registry's CA certificate in /etc/docker/certs.d/{host}/ca.crt (or "
                     f"/etc/containers/certs.d/{host}/), or add it to the system's CAs")
        if client_certificate_refused(cause):
            return RegistryError(
                f"{host}: the registry asks for a client certificate, and took none that was offered",
                hint=f"put the client pair as /etc/docker/certs.d/{host}/client.cert and client.key (or in "
                     f"/etc/containers/certs.d/{host}/)")
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, wire.ConnectTimeout):
        return RegistryError(f"cannot connect to {host}: timed out ({what})",
                             hint="check the name, the port and the network")
    if isinstance(exc, wire.ConnectError):
        if "refused" in text.lower():
            return RegistryError(f"cannot connect to {host}: connection refused ({what})",
                                 hint=f"is a registry listening on {host}? check the host and port")
        if "name or service" in text.lower() or "nodename" in text.lower() or "resolution" in text.lower():
            return RegistryError(f"cannot connect to {host}: unknown host ({what})", hint="check the registry's name")
        return RegistryError(f"cannot connect to {host}: {text[:_MAX_DETAIL]} ({what})",
                             hint="check the name, the port and the network")
    if isinstance(exc, wire.UnsupportedProtocol):
        return RegistryError(f"{host}: {text[:_MAX_DETAIL]} ({what})",
                             hint="the registry (or its token service) named a URL or value HTTP cannot carry")
    if isinstance(exc, wire.TimeoutException):
        return RegistryError(f"{host}: timed out ({what})", hint="the registry is slow or unreachable; try again",
                             transient=True)
    return RegistryError(f"{host}: connection lost ({what}): {text[:_MAX_DETAIL] or type(exc).__name__}",
                         hint="try again; the registry or the network dropped the connection", transient=True)


def client_certificate_refused(exc: BaseException) -> bool:
    """A TLS alert that says the server wanted (another) client certificate: no use trying again."""
    text = str(exc).upper()
    return any(alert in text for alert in ("CERTIFICATE_REQUIRED", "ALERT_BAD_CERTIFICATE",
                                           "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_UNKNOWN"))
