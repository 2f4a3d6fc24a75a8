"""The pure parts of the client: challenges, the token cache, retry waits, loopback and certs.d, and the
words errors are put in (statuses and bodies built here; the real answers are in test_client.py)."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path

import pytest

from layerbuild.errors import RegistryAuthError, RegistryError
from layerbuild.registry import wire
from layerbuild.registry.auth import TokenCache, parse_challenges
from layerbuild.registry.failures import response_error
from layerbuild.registry.transport import RetryPolicy, is_loopback, retry_after, tls_context
from tests.registry.kit import make_ca


def test_challenges() -> None:
    [c] = parse_challenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                           'scope="repository:library/ubuntu:pull,push",error="insufficient_scope"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                        "scope": "repository:library/ubuntu:pull,push", "error": "insufficient_scope"}
    [c] = parse_challenges('Basic realm="Registry Realm"')
    assert (c.scheme, c.params) == ("basic", {"realm": "Registry Realm"})
    both = parse_challenges('Basic realm="a", Bearer realm="https://x/t",service=s')
    assert [c.scheme for c in both] == ["basic", "bearer"] and both[1].params["service"] == "s"
    assert parse_challenges("") == []


def test_token_cache_expires_and_drops() -> None:
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put(["repository:a:pull"], "t1", 300)
    assert cache.get(["repository:a:pull"]) is not None
    assert cache.get(["repository:a:pull,push"]) is None  # per scope set
    assert "t1" not in repr(cache.get(["repository:a:pull"]))
    now[0] += 289
    assert cache.get(["repository:a:pull"]) is not None
    now[0] += 2  # renewed a little before it expires
    assert cache.get(["repository:a:pull"]) is None
    cache.put(["s"], "t2", 5)  # lifetimes under 60 s count as 60 (the token spec's minimum)
    now[0] += 49
    assert cache.get(["s"]) is not None
    cache.drop(["s"])
    assert cache.get(["s"]) is None


def test_retry_waits() -> None:
    policy = RetryPolicy(attempts=4, base=1.0, cap=3.0)
    waits = [policy.delay(i) for i in range(4)]
    assert waits[3] is None
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0 and 1.5 <= waits[2] <= 3.0  # type: ignore[operator]
    busy = wire.Response(503, headers={"Retry-After": "7"})
    assert policy.delay(0, busy) == 7.0
    assert policy.delay(0, wire.Response(429, headers={"Retry-After": "3600"})) is None  # too long to wait
    date = email.utils.formatdate(time.time() + 5, usegmt=True)
    assert 3.0 <= retry_after(wire.Response(503, headers={"Retry-After": date})) <= 5.0  # type: ignore[operator]
    assert retry_after(wire.Response(503, headers={"Retry-After": "soon"})) is None


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1:5000", True), ("127.1.2.3", True), ("localhost:5000", True), ("[::1]:5000", True), ("::1", True),
    ("10.0.0.1:5000", False), ("registry.example.com", False), ("localhost.example.com:5000", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_certs_d(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    d = tmp_path / "certs.d" / "reg.example:5000"
    d.mkdir(parents=True)
    (d / "ca.crt").write_bytes(ca.cert.read_bytes())
    ctx = tls_context("reg.example:5000", dirs=[tmp_path / "certs.d"])
    assert any(c.get("subject") == ((("commonName", "layerbuild test CA"),),) for c in ctx.get_ca_certs())
    (d / "client.cert").write_bytes(ca.server_cert.read_bytes())
    with pytest.raises(RegistryError, match=r"has no key client\.key"):
        tls_context("reg.example:5000", dirs=[tmp_path / "certs.d"])
    (d / "client.key").write_bytes(ca.server_key.read_bytes())
    tls_context("reg.example:5000", dirs=[tmp_path / "certs.d"])  # a client pair loads
    (d / "bad.crt").write_text("not a certificate")
    with pytest.raises(RegistryError, match=r"bad\.crt"):
        tls_context("reg.example:5000", dirs=[tmp_path / "certs.d"])


def _answer(status: int, code: str | None = None) -> wire.Response:
    body = {"errors": [{"code": code, "message": "said by the registry", "detail": {}}]} if code else {}
    return wire.Response(status, content=json.dumps(body).encode())


@pytest.mark.parametrize(("status", "code", "cls", "words", "hint"), [
    (401, "UNAUTHORIZED", RegistryAuthError, "authentication required", "layerbuild login reg.example"),
    (403, "DENIED", RegistryAuthError, "denied", "layerbuild login reg.example"),
    (404, "MANIFEST_UNKNOWN", RegistryError, "no such tag or manifest: reg.example/app:v9", "check the tag"),
    (404, "NAME_UNKNOWN", RegistryError, "repository reg.example/app does not exist", "image name"),
    (404, "BLOB_UNKNOWN", RegistryError, "not found in reg.example/app", "lacks a blob"),
    (429, "TOOMANYREQUESTS", RegistryError, "too many requests", "wait"),
    (429, None, RegistryError, "too many requests", "wait"),
    (404, None, RegistryError, "no such tag or manifest", "check the tag"),
    (500, None, RegistryError, "HTTP 500", None),
])
def test_registry_errors_in_plain_words(status: int, code: str | None, cls: type[RegistryError], words: str,
                                        hint: str | None) -> None:
    err = response_error(_answer(status, code), host="reg.example", what="GET manifest",
                         repository="reg.example/app", reference="v9")
    assert type(err) is cls
    assert words in err.message
    assert (hint is None and err.hint is None) or (hint is not None and hint in (err.hint or ""))
    assert err.status == status



@pytest.mark.parametrize(("exc", "words", "transient"), [
    (wire.ConnectError("[Errno 111] Connection refused"), "connection refused", False),
    (wire.ConnectError("[Errno -2] Name or service not known"), "unknown host", False),
    (wire.ConnectTimeout("timed out"), "cannot connect to reg.example: timed out", False),
    (wire.ReadTimeout("timed out"), "timed out (GET blob)", True),
    (wire.RemoteProtocolError("peer closed connection"), "connection lost (GET blob)", True),
    (wire.UnsupportedProtocol("the request to x cannot be sent: bad header"), "cannot be sent", False),
])
def test_transport_errors_in_plain_words(exc: Exception, words: str, transient: bool) -> None:
    from layerbuild.registry.failures import transport_error

    err = transport_error(exc, host="reg.example", what="GET blob")
    assert words in err.message and err.hint and err.transient is transient
