"""The registries tests talk to (session-scoped: starting one takes about a second), and a client for
each, with its account and CA. tests/conftest.py imports the fixtures, so every test package may use them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.registry import Credentials, RegistryClient, RetryPolicy
from tests.registry.kit import Registry, StorageServer, start_registry


class Logins:
    """Fixed credentials by registry host (the CredentialSource protocol), for the library tests."""

    def __init__(self, logins: dict[str, Credentials]) -> None:
        self.logins = logins

    def get(self, host: str) -> Credentials | None:
        return self.logins.get(host)


def client_for(registry: Registry, *, host: str | None = None, password: str | None = None,
               anonymous: bool = False, sleeps: list[float] | None = None, **kwargs: object) -> RegistryClient:
    """A client of `registry` (or of `host`, a proxy in front of it) logged in with its account (or
    `password`), trusting its CA; waits between retries are recorded in `sleeps` (and really spent)."""
    import time

    host = host or registry.host
    creds = None if anonymous or registry.kind == "plain" else Credentials(registry.user,
                                                                            password or registry.password)
    def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)
        time.sleep(min(seconds, 2.0))

    dirs = [registry.certs_dir] if registry.certs_dir is not None else []
    return RegistryClient(credentials=Logins({host: creds} if creds else {}), certs_dirs=dirs, sleep=sleep,
                          retry=kwargs.pop("retry", RetryPolicy(base=0.05)), **kwargs)  # type: ignore[arg-type]


def _registry(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = start_registry(kind, Path(tmp_path_factory.mktemp(f"registry-{kind}")))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry without auth, over HTTP on 127.0.0.1."""
    yield from _registry("plain", tmp_path_factory)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with htpasswd (bcrypt) auth, over TLS with a CA the fixture made."""
    yield from _registry("htpasswd", tmp_path_factory)


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with token auth, from the tests' token server (JWTs it signs)."""
    yield from _registry("token", tmp_path_factory)


@pytest.fixture(params=["plain", "htpasswd", "token"])
def any_registry(request: pytest.FixtureRequest) -> Registry:
    """Each kind of registry in turn."""
    name = {"plain": "plain_registry", "htpasswd": "tls_registry", "token": "token_registry"}[request.param]
    reg: Registry = request.getfixturevalue(name)
    return reg


@pytest.fixture
def storage() -> Iterator[StorageServer]:
    server = StorageServer()
    yield server
    server.close()


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The CLI's docker config and certs.d in the test's own directory."""
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("LAYERBUILD_CERTS_DIRS", str(tmp_path / "no-certs"))
    yield
