"""Registry auth: `WWW-Authenticate` challenges, Basic, and distribution's Bearer token flow (GET with
Basic, or the OAuth2 POST form), tokens cached per scope until they expire."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from layerbuild.errors import RegistryAuthError, RegistryError
from layerbuild.registry import wire
from layerbuild.registry.credentials import Credentials

CLIENT_ID = "layerbuild"
_MIN_EXPIRY = 60.0  # distribution's default, and the least a client may assume (its token spec)
_MARGIN = 10.0  # a token is renewed this long before it expires
_MAX_TOKEN_RESPONSE = 1 << 20

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: `scheme` lowercased (`basic`, `bearer`) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """`Bearer realm="https://a/token",service="reg",scope="repository:x:pull"` → [Challenge(...)]."""
    challenges: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        m = re.match(r"\s*,?\s*([A-Za-z][A-Za-z0-9_-]*)", text[pos:])
        if not m:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while True:
            p = _PARAM.match(text, pos)
            if not p or (p.group(2) is None and p.group(3) is None):
                break
            params[p.group(1).lower()] = p.group(2).replace('\\"', '"') if p.group(2) is not None else p.group(3)
            pos = p.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def pull_scope(path: str) -> str:
    return f"repository:{path}:pull"


def push_scope(path: str) -> str:
    return f"repository:{path}:pull,push"


@dataclass(frozen=True)
class Token:
    value: str
    expires: float  # time.monotonic() after which it is renewed

    def __repr__(self) -> str:
        return "Token(<hidden>)"


class TokenCache:
    """Bearer tokens by scope set, thread-safe; an expired or rejected token is dropped."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens: dict[frozenset[str], Token] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def get(self, scopes: Iterable[str]) -> Token | None:
        key = frozenset(scopes)
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and token.expires <= self.clock():
                del self._tokens[key]
                return None
            return token

    def put(self, scopes: Iterable[str], value: str, lifetime: float) -> Token:
        token = Token(value, self.clock() + max(lifetime, _MIN_EXPIRY) - _MARGIN)
        with self._lock:
            self._tokens[frozenset(scopes)] = token
        return token

    def drop(self, scopes: Iterable[str]) -> None:
        with self._lock:
            self._tokens.pop(frozenset(scopes), None)


def fetch_token(client: wire.Client, challenge: Challenge, scopes: list[str], creds: Credentials | None, *,
                host: str, oauth: bool = False) -> tuple[str, float]:
    """A token for `scopes` from the challenge's realm: (token, lifetime in seconds).

    With an identity token (or `oauth` and a password) the OAuth2 POST form is used, as distribution's
    token spec describes; a realm that does not take POST (404/405) gets the GET form with Basic.
    """
    realm = challenge.params.get("realm")
    if not realm:
        raise RegistryError(f"{host}: its Bearer challenge names no token realm",
                            hint="the registry's auth configuration is broken")
    service = challenge.params.get("service")
    if creds is not None and (creds.identity_token or (oauth and creds.password)):
        form: dict[str, str] = {"client_id": CLIENT_ID}
        if creds.identity_token:
            form.update(grant_type="refresh_token", refresh_token=creds.identity_token)
        else:
            form.update(grant_type="password", username=creds.username, password=creds.password)
        if service:
            form["service"] = service
        if scopes:
            form["scope"] = " ".join(scopes)
        resp = client.post(realm, data=form)
        if resp.status_code not in (404, 405) or creds.identity_token:
            return _token_from(resp, host=host, realm=realm)
        resp.close()
    params: list[tuple[str, str]] = []
    if service:
        params.append(("service", service))
    params.extend(("scope", s) for s in scopes)
    headers = {}
    if creds is not None and creds.password:
        params.append(("account", creds.username))
        headers["Authorization"] = basic_header(creds)
    resp = client.get(realm, params=params, headers=headers)
    return _token_from(resp, host=host, realm=realm)


def _token_from(resp: wire.Response, *, host: str, realm: str) -> tuple[str, float]:
    realm_host = wire.URL(realm).netloc
    if resp.status_code in (401, 403):
        raise RegistryAuthError(f"{host}: the token service ({realm_host}) refused the credentials",
                                hint=f"check the user name and password: layerbuild login {host}",
                                code="UNAUTHORIZED", status=resp.status_code)
    if resp.status_code != 200:
        raise RegistryError(f"{host}: the token service ({realm_host}) answered HTTP {resp.status_code}",
                            status=resp.status_code)
    try:
        body = json.loads(resp.content[:_MAX_TOKEN_RESPONSE])
        token = body.get("token") or body.get("access_token")
        lifetime = float(body.get("expires_in") or _MIN_EXPIRY)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError):
        token = None
        lifetime = 0.0
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{host}: the token service ({realm_host}) answered without a token")
    return token, lifetime
