"""Real registries for the tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1 in three kinds
(no auth over HTTP; htpasswd over TLS with a generated CA; token auth from a token server here), plus a
loopback HTTP proxy that injects faults and a second loopback server that plays a storage host."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
HTPASSWD_BIN = shutil.which("htpasswd") or "/usr/bin/htpasswd"
USER, PASSWORD = "alice", "s3cret-Pa55word"
SERVICE, ISSUER = "layerbuild-test", "layerbuild-test-issuer"


def need_registry() -> None:
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("Debian's docker-registry is not installed (scripts/setup --test installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates ---------------------------------------------------------------------------------


@dataclass
class CA:
    """A CA the tests generate, and a server certificate it signed for 127.0.0.1 and localhost."""

    dir: Path
    cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def certs_dir_for(self, host: str, base: Path) -> Path:
        """A certs.d tree (`base/<host>/ca.crt`) that trusts this CA for `host`; returns `base`."""
        (base / host).mkdir(parents=True, exist_ok=True)
        shutil.copy(self.cert, base / host / "ca.crt")
        return base


def make_ca(where: Path) -> CA:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    where.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layerbuild test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layerbuild test client")]))
              .issuer_name(ca_name).public_key(client_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (where / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (where / "server.crt").write_bytes(cert.public_bytes(pem))
    (where / "client.cert").write_bytes(client.public_bytes(pem))
    for name, k in (("server.key", key), ("client.key", client_key)):
        (where / name).write_bytes(k.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    return CA(where, where / "ca.crt", where / "server.crt", where / "server.key", where / "client.cert",
              where / "client.key")


# --- the token server -------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_der: bytes) -> str:
    """The key id distribution matches a token's `kid` against: libtrust's base32 of sha256(SPKI)[:30]."""
    digest = base64.b32encode(hashlib.sha256(public_der).digest()[:30]).decode().rstrip("=")
    return ":".join(digest[i:i + 4] for i in range(0, len(digest), 4))


class TokenServer:
    """distribution's token auth, the server side: GET /token (Basic) and POST /token (OAuth2 form),
    JWTs signed RS256 with a generated key whose certificate the registry trusts (rootcertbundle).

    Users: `users` (name → password); `refresh_tokens` (token → name) for the refresh_token grant.
    Anonymous requests get no access. Every request is recorded in `requests`."""

    def __init__(self, where: Path, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = dict(users)
        self.refresh_tokens: dict[str, str] = {"refresh-" + secrets.token_hex(8): name for name in users}
        self.requests: list[dict[str, Any]] = []
        self.lifetime = 300
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "layerbuild test token signer")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2)).sign(self._key, hashes.SHA256()))
        where.mkdir(parents=True, exist_ok=True)
        self.cert_path = where / "token-signer.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        der = self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = libtrust_key_id(der)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, subject: str, scopes: list[str], service: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and subject:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {"iss": ISSUER, "sub": subject, "aud": service, "exp": now + self.lifetime, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _issue(self, subject: str, scopes: list[str], service: str, oauth: bool) -> None:
                token = server.token(subject, scopes, service)
                body: dict[str, Any] = {"expires_in": server.lifetime,
                                        "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}
                body.update({"access_token": token} if oauth else {"token": token, "access_token": token})
                self._answer(200, body)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                auth = self.headers.get("Authorization", "")
                subject = ""
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(user) != password:
                        server.requests.append({"method": "GET", "ok": False, "user": user})
                        self._answer(401, {"details": "wrong user name or password"})
                        return
                    subject = user
                scopes = query.get("scope", [])
                server.requests.append({"method": "GET", "ok": True, "user": subject, "scopes": scopes,
                                        "service": query.get("service", [""])[0],
                                        "authorization": bool(auth)})
                self._issue(subject, scopes, query.get("service", [SERVICE])[0], oauth=False)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                subject = None
                if grant == "password":
                    user = form.get("username", [""])[0]
                    if server.users.get(user) == form.get("password", [""])[0]:
                        subject = user
                elif grant == "refresh_token":
                    subject = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                scopes = " ".join(form.get("scope", [])).split()
                server.requests.append({"method": "POST", "ok": subject is not None, "grant": grant,
                                        "user": subject, "scopes": scopes,
                                        "client_id": form.get("client_id", [""])[0]})
                if subject is None:
                    self._answer(401, {"error": "invalid_grant"})
                    return
                self._issue(subject, scopes, form.get("service", [SERVICE])[0], oauth=True)

        return Handler


# --- the registry -----------------------------------------------------------------------------------


@dataclass
class Registry:
    """A running docker-registry: `host` is `127.0.0.1:PORT`; `ca` is set for the TLS kind, `token`
    for the token kind; `user`/`password` are the account the htpasswd and token kinds accept."""

    kind: str
    host: str
    root: Path
    process: subprocess.Popen[bytes]
    ca: CA | None = None
    token: TokenServer | None = None
    user: str = USER
    password: str = PASSWORD
    certs_dir: Path | None = None
    log: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.token is not None:
            self.token.close()


def start_registry(kind: str, where: Path) -> Registry:
    """docker-registry on 127.0.0.1 with a config written here: `plain` (no auth, HTTP), `htpasswd`
    (bcrypt, over TLS with a CA made here), `token` (JWTs from a TokenServer, HTTP) or `mtls` (no auth,
    TLS that requires a client certificate from the CA; `certs_dir` holds only the CA)."""
    need_registry()
    where.mkdir(parents=True, exist_ok=True)
    ca = token = None
    certs_dir = None
    auth = ""
    tls = ""
    if kind == "htpasswd":
        ca = make_ca(where / "tls")
        subprocess.run([HTPASSWD_BIN, "-Bbc", str(where / "htpasswd"), USER, PASSWORD], check=True,
                       capture_output=True)
        auth = f"auth:\n  htpasswd:\n    realm: layerbuild-test\n    path: {where / 'htpasswd'}\n"
        tls = f"  tls:\n    certificate: {ca.server_cert}\n    key: {ca.server_key}\n"
    elif kind == "mtls":
        ca = make_ca(where / "tls")
        tls = (f"  tls:\n    certificate: {ca.server_cert}\n    key: {ca.server_key}\n"
               f"    clientcas:\n      - {ca.cert}\n")
    elif kind == "token":
        token = TokenServer(where / "token", {USER: PASSWORD})
        auth = (f"auth:\n  token:\n    realm: {token.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {token.cert_path}\n")
    elif kind != "plain":
        raise ValueError(kind)
    for _ in range(5):
        port = free_port()
        host = f"127.0.0.1:{port}"
        config = where / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {where / 'data'}\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: {host}\n  secret: {secrets.token_hex(16)}\n{tls}" + auth)
        log = where / "registry.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        if ca is not None:
            certs_dir = ca.certs_dir_for(host, where / "certs.d")
        if _wait_ready(host, proc, ca):
            return Registry(kind, host, where, proc, ca=ca, token=token, certs_dir=certs_dir, log=log)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"docker-registry did not start: {(where / 'registry.log').read_text()[-2000:]}")


def _wait_ready(host: str, proc: subprocess.Popen[bytes], ca: CA | None, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if ca is not None:
                ctx = ssl.create_default_context(cafile=str(ca.cert))
                ctx.load_cert_chain(str(ca.client_cert), str(ca.client_key))  # for the mtls kind
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, timeout=2, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, timeout=2)
            conn.request("GET", "/v2/")
            status = conn.getresponse().status
            conn.close()
            if status in (200, 401):
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


# --- a proxy that injects faults, and a storage host ---------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


# A rule sees each request (method, path, headers) and answers None (forward it as it is) or an action:
#   ("status", code, headers, body)   answer this instead of forwarding
#   ("cut", n)                        forward, then send the headers and only n bytes of the body, and drop
#   ("alter", fn)                     forward, send fn(body) (Content-Length fixed) instead of the body
#   ("redirect", url)                 answer 307 to url
#   ("drop",)                         close the connection without an answer (nothing is forwarded)
Rule = Callable[[str, str, dict[str, str]], tuple[Any, ...] | None]


class FaultProxy:
    """An HTTP server on 127.0.0.1 that forwards every request to a registry (HTTP or HTTPS) and lets
    rules alter answers. Host is passed through and X-Forwarded-Proto says http, so the registry's
    upload locations point back at the proxy. Every request is recorded in `seen`."""

    def __init__(self, upstream: Registry) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _connect(self) -> http.client.HTTPConnection:
        if self.upstream.ca is not None:
            ctx = ssl.create_default_context(cafile=str(self.upstream.ca.cert))
            return http.client.HTTPSConnection(self.upstream.host, timeout=30, context=ctx)
        return http.client.HTTPConnection(self.upstream.host, timeout=30)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                headers = {k: v for k, v in self.headers.items()}
                proxy.seen.append(Seen(self.command, self.path, headers))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = None
                for rule in proxy.rules:
                    action = rule(self.command, self.path, headers)
                    if action is not None:
                        break
                if action is not None and action[0] == "status":
                    _, code, extra, data = action
                    self.send_response(code)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if action is not None and action[0] == "drop":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if action is not None and action[0] == "redirect":
                    self.send_response(307)
                    self.send_header("Location", action[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = proxy._connect()
                fwd = {k: v for k, v in headers.items() if k.lower() not in ("connection", "keep-alive")}
                fwd["X-Forwarded-Proto"] = "http"
                conn.request(self.command, self.path, body=body if (body or self.command in ("PUT", "POST", "PATCH"))
                             else None, headers=fwd)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if action is not None and action[0] == "alter":
                    data = action[1](data)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "keep-alive"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if action is not None and action[0] == "cut":
                    self.end_headers()
                    self.wfile.write(data[: action[1]])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

        return Handler


class StorageServer:
    """A second loopback server, as the storage host a registry redirects blob downloads to: it serves
    `blobs` (path → bytes) and records the headers of every request."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append(Seen("GET", self.path, {k: v for k, v in self.headers.items()}))
                data = server.blobs.get(urllib.parse.urlsplit(self.path).path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def once(times: int, rule: Rule) -> Rule:
    """`rule`, applied to its first `times` matches only."""
    left = [times]

    def limited(method: str, path: str, headers: dict[str, str]) -> tuple[Any, ...] | None:
        if left[0] <= 0:
            return None
        action = rule(method, path, headers)
        if action is not None:
            left[0] -= 1
        return action

    return limited
