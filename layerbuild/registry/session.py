"""One registry host as the client sees it: its scheme (found by a ping), TLS, auth and the request loop
(auth, 401 → re-auth once, retries with backoff, redirects that never carry credentials elsewhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from layerbuild import __version__
from layerbuild.errors import RegistryError
from layerbuild.reference import api_host
from layerbuild.registry import wire
from layerbuild.registry.auth import Challenge, TokenCache, basic_header, fetch_token, parse_challenges
from layerbuild.registry.credentials import Credentials
from layerbuild.registry.failures import response_error, transport_error
from layerbuild.registry.transport import (
    RETRY_STATUSES,
    RetryPolicy,
    is_loopback,
    named_insecure,
    retryable_transport_error,
    tls_context,
)

USER_AGENT = f"layerbuild/{__version__}"
_MAX_REDIRECTS = 5

# A request body: bytes, or a function that opens a fresh iterable of its bytes (called once per try).
Body = bytes | Callable[[], Iterable[bytes]] | None


class CredentialSource(Protocol):
    """Where credentials come from (DockerConfig, or a fixed map in tests and the library)."""

    def get(self, host: str) -> Credentials | None: ...


@dataclass
class Options:
    credentials: CredentialSource | None
    insecure: frozenset[str]
    retry: RetryPolicy
    timeout: float
    oauth: bool = False
    connect_timeout: float = 15.0  # the OAuth2 POST form for password logins too (identity tokens always use it)
    certs_dirs: list[Path] | None = None  # None: $LAYERBUILD_CERTS_DIRS, else docker's and containers' certs.d
    sleep: Callable[[float], None] = field(default=time.sleep)


class Session:
    """Everything about one registry `domain` (as names spell it; `docker.io` for Docker Hub).

    Thread-safe: the ping, the credentials lookup and token fetches happen under the session's lock;
    the connection pools are shared by all threads. Created and closed by `RegistryClient`.
    """

    def __init__(self, domain: str, options: Options, clients: OriginClients) -> None:
        self.domain = domain
        self.host = api_host(domain)
        self.options = options
        self.clients = clients
        self._lock = threading.RLock()
        self._base: str | None = None
        self._challenge: Challenge | None = None
        self._creds: Credentials | None = None
        self._creds_loaded = False
        self.tokens = TokenCache()
        self.api_version = ""

    # --- what the registry is -------------------------------------------------------------------

    @property
    def plain_http_allowed(self) -> bool:
        return is_loopback(self.host) or named_insecure(self.host, self.options.insecure)

    def base(self) -> str:
        """`https://host` (or `http://host` for a loopback or insecure registry that has no TLS)."""
        with self._lock:
            if self._base is None:
                self._ping()
            assert self._base is not None
            return self._base

    def _ping(self) -> None:
        """GET /v2/ to learn the scheme and the auth challenge, as docker does before anything else."""
        last: RegistryError | None = None
        schemes = ["https", "http"] if self.plain_http_allowed else ["https"]
        if is_loopback(self.host):
            # Nothing between us and a loopback registry can downgrade the answer: plain HTTP first
            # spares a TLS context (a tenth of a second) for the usual local registry, and one that
            # speaks TLS tells a plain request off with 400, so it is reached over TLS as before.
            schemes = ["http", "https"]
        for scheme in schemes:
            url = f"{scheme}://{self.host}/v2/"
            client = self.clients.get(url)
            try:
                resp = self._send_retrying(lambda: client.get(url), what="ping")  # noqa: B023 - called at once
            except RegistryError as exc:
                if "TLS certificate" in exc.message or "client certificate" in exc.message or scheme == schemes[-1]:
                    raise
                last = exc
                continue
            if resp.status_code == 400 and scheme == "http" and scheme != schemes[-1]:
                resp.close()  # an HTTPS server telling a plain request off: try it over TLS
                continue
            if resp.status_code == 400 and last is not None:
                resp.close()  # an HTTPS server telling a plain request off: its TLS failure is the answer
                raise last
            if resp.status_code not in (200, 401):
                resp.close()
                raise RegistryError(f"{self.host} is not an OCI registry: GET /v2/ answered HTTP {resp.status_code}",
                                    hint="check the host and port", status=resp.status_code)
            self._base = f"{scheme}://{self.host}"
            self.api_version = resp.headers.get("docker-distribution-api-version", "")
            if resp.status_code == 401:
                self._challenge = _pick(parse_challenges(resp.headers.get("www-authenticate", "")))
            resp.close()
            return
        assert last is not None
        raise last

    @property
    def challenge(self) -> Challenge | None:
        self.base()
        return self._challenge

    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._creds_loaded:
                source = self.options.credentials
                self._creds = source.get(self.domain) if source is not None else None
                self._creds_loaded = True
            return self._creds

    def set_credentials(self, creds: Credentials | None) -> None:
        with self._lock:
            self._creds, self._creds_loaded = creds, True

    # --- auth -----------------------------------------------------------------------------------

    def authorization(self, scopes: list[str]) -> str | None:
        challenge = self.challenge
        if challenge is None:
            return None
        creds = self.credentials()
        if challenge.scheme == "basic":
            if creds is None or not creds.password:
                return None
            return basic_header(creds)
        if challenge.scheme != "bearer":
            raise RegistryError(f"{self.host} asks for {challenge.scheme} auth, which layerbuild does not speak",
                                hint="Basic and Bearer (token) auth are supported")
        token = self.tokens.get(scopes)
        if token is None:
            with self._lock:
                token = self.tokens.get(scopes)
                if token is None:
                    value, lifetime = self.fetch_token(challenge, scopes, creds)
                    token = self.tokens.put(scopes, value, lifetime)
        return f"Bearer {token.value}"

    def fetch_token(self, challenge: Challenge, scopes: list[str], creds: Credentials | None) -> tuple[str, float]:
        realm = challenge.params.get("realm", "")
        url = wire.URL(realm) if realm else None
        if url is None or url.scheme not in ("https", "http"):
            raise RegistryError(f"{self.host}: its token realm {realm!r} is not an http(s) URL")
        realm_host = url.netloc
        if url.scheme == "http" and not (self.plain_http_allowed or is_loopback(realm_host)):
            raise RegistryError(f"{self.host}: its token realm {realm} is plain HTTP; credentials are not sent there",
                                hint=f"name the registry insecure (LAYERBUILD_INSECURE_REGISTRIES={self.host}) "
                                     "if that is intended")
        client = self.clients.get(realm)
        attempt = 0
        while True:
            try:
                return fetch_token(client, challenge, scopes, creds, host=self.domain, oauth=self.options.oauth)
            except wire.TransportError as exc:
                wait = self.options.retry.delay(attempt) if retryable_transport_error(exc) else None
                if wait is None:
                    raise transport_error(exc, host=realm_host, what="token") from None
                self.options.sleep(wait)
                attempt += 1

    def reauthenticate(self, scopes: list[str], response: wire.Response) -> list[str]:
        """After a 401: drop the token for `scopes`, take the registry's new challenge, and return the
        scopes to ask for next (with the one the challenge names, when it names another, as docker does)."""
        self.tokens.drop(scopes)
        fresh = _pick(parse_challenges(response.headers.get("www-authenticate", "")))
        if fresh is None:
            return scopes
        with self._lock:
            self._challenge = fresh
        wanted = fresh.params.get("scope", "").split()
        return scopes + [w for w in wanted if w not in scopes]

    # --- the request loop ------------------------------------------------------------------------

    def _send_retrying(self, send: Callable[[], wire.Response], *, what: str) -> wire.Response:
        """`send()` retried on lost connections and 408/429/5xx (after a Retry-After wait, if given)."""
        attempt = 0
        while True:
            try:
                resp = send()
            except wire.TransportError as exc:
                wait = self.options.retry.delay(attempt) if retryable_transport_error(exc) else None
                if wait is None:
                    raise transport_error(exc, host=self.host, what=what) from None
            else:
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                wait = self.options.retry.delay(attempt, resp)
                if wait is None:
                    return resp
                resp.close()
            self.options.sleep(wait)
            attempt += 1

    def request(self, method: str, path_or_url: str, *, scopes: list[str], what: str,
                headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                content: Body = None, stream: bool = False, retry: bool = True,
                follow: bool = True) -> wire.Response:
        """One registry request with auth, retries and redirects; the response is the caller's to close.

        Error statuses are returned, not raised (callers know which ones they expect); a registry that
        cannot be reached raises RegistryError. A redirect to another origin is followed without any
        Authorization header, so neither credentials nor tokens leave the registry.
        """
        base = self.base()
        url = path_or_url if "://" in path_or_url else base + path_or_url
        reauthed = False
        attempt = 0
        while True:
            try:
                resp = self._send_once(method, url, scopes=scopes, headers=headers, params=params,
                                       content=content, stream=stream, follow=follow)
            except wire.TransportError as exc:
                wait = self.options.retry.delay(attempt) if retry and retryable_transport_error(exc) else None
                if wait is None:
                    raise transport_error(exc, host=self.host, what=what) from None
                self.options.sleep(wait)
                attempt += 1
                continue
            if resp.status_code == 401 and not reauthed:  # an expired or revoked token: renew it once
                reauthed = True
                scopes = self.reauthenticate(scopes, resp)
                resp.close()
                continue
            if retry and resp.status_code in RETRY_STATUSES:
                wait = self.options.retry.delay(attempt, resp)
                if wait is not None:
                    resp.close()
                    self.options.sleep(wait)
                    attempt += 1
                    continue
            return resp

    def _send_once(self, method: str, url: str, *, scopes: list[str], headers: dict[str, str] | None,
                   params: dict[str, str] | None, content: Body, stream: bool, follow: bool) -> wire.Response:
        origin = wire.URL(self.base()).origin
        auth = self.authorization(scopes)
        target = wire.URL(url)
        for _ in range(_MAX_REDIRECTS + 1):
            hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
            if auth is not None and target.origin == origin:
                hdrs["Authorization"] = auth
            body = content() if callable(content) else content
            resp = self.clients.get(target).request(method, target, headers=hdrs, params=params, content=body)
            if not (follow and resp.status_code in (301, 302, 303, 307, 308) and "location" in resp.headers):
                if not stream:
                    resp.read()
                return resp
            resp.close()
            target = target.with_params(params or {}).join(resp.headers["location"])
            params = None
            if resp.status_code == 303:
                method, content = "GET", None
        raise RegistryError(f"{self.host}: too many redirects ({_MAX_REDIRECTS})")

    def fail(self, resp: wire.Response, *, what: str, repository: str | None = None,
             reference: str | None = None) -> RegistryError:
        return response_error(resp, host=self.domain, what=what, repository=repository, reference=reference)


def _pick(challenges: list[Challenge]) -> Challenge | None:
    """Bearer if offered, else Basic, else whatever came first (refused when used)."""
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return challenges[0] if challenges else None


class OriginClients:
    """One HTTP client per origin (scheme, host, port), each with that host's TLS settings; thread-safe."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self._clients: dict[tuple[str, str], wire.Client] = {}
        self._lock = threading.Lock()

    def get(self, url: str | wire.URL) -> wire.Client:
        u = url if isinstance(url, wire.URL) else wire.URL(url)
        key = (u.scheme, u.netloc)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                verify = not named_insecure(u.netloc, self.options.insecure)
                # Plain HTTP needs no TLS context (building a verifying one takes a tenth of a second).
                ctx = tls_context(u.netloc, verify=verify, dirs=self.options.certs_dirs) if u.scheme == "https" else None
                client = wire.Client(ctx, timeout=self.options.timeout, connect_timeout=self.options.connect_timeout,
                                     headers={"User-Agent": USER_AGENT})
                self._clients[key] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
