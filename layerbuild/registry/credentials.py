"""Registry credentials as docker keeps them: config.json (`credHelpers`, `credsStore`, `auths`) and
`docker-credential-<name>` helpers speaking docker's JSON protocol (get/store/erase)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.errors import RegistryError, UsageError
from layerbuild.reference import DOCKER_HUB, DOCKER_HUB_CONFIG_KEY, registry_host

if TYPE_CHECKING:
    import subprocess

# docker-credential-helpers' answer when it has nothing for a server (its exit status is 1 then).
_NOT_FOUND = "credentials not found in native keychain"
_HELPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credentials:
    """A user name with its password, or an identity (refresh) token; never shown by repr."""

    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """The secret strings, for tests and scrubbers that must never see them in output."""
        return [s for s in (self.password, self.identity_token) if s]


def config_key(host: str) -> str:
    """The key docker files `host`'s credentials under: Docker Hub's is `https://index.docker.io/v1/`."""
    return DOCKER_HUB_CONFIG_KEY if host == DOCKER_HUB else host


def config_dir() -> Path:
    """`$DOCKER_CONFIG`, else `~/.docker` (docker's lookup)."""
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


class DockerConfig:
    """Credentials in docker's config.json: looked up, stored and erased the way the docker CLI does.

    Lookup order for a registry: `credHelpers[host]`, then `credsStore`, then `auths` (`auth`, base64 of
    `user:password`, or `identitytoken`). The file is re-read on every call, so another process's login
    is seen; writes keep every other key of the file, are atomic (temp file + rename) and mode 0600.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else config_dir() / "config.json"

    # --- reading ---------------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            data = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.path} is not valid JSON (line {exc.lineno})",
                                hint="fix or remove the file; it is docker's config.json format") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{self.path} is not a JSON object", hint="it is docker's config.json format")
        return data

    def helper_for(self, host: str) -> str | None:
        """The credential helper that holds `host`'s credentials, if the config names one."""
        data = self._load()
        helpers = data.get("credHelpers") or {}
        for key, name in helpers.items() if isinstance(helpers, dict) else ():
            if _key_host(key) == host and isinstance(name, str) and name:
                return name
        store = data.get("credsStore")
        return store if isinstance(store, str) and store else None

    def get(self, host: str) -> Credentials | None:
        """The credentials for registry `host` (`docker.io` for Docker Hub), or None (anonymous)."""
        helper = self.helper_for(host)
        if helper is not None:
            return helper_get(helper, config_key(host))
        auths = self._load().get("auths") or {}
        if not isinstance(auths, dict):
            return None
        for key, entry in auths.items():
            if _key_host(key) == host and isinstance(entry, dict):
                creds = _decode_entry(self.path, key, entry)
                if creds is not None:
                    return creds
        return None

    # --- writing ---------------------------------------------------------------------------------

    def store(self, host: str, creds: Credentials) -> str:
        """Keep `creds` for `host`, with its helper if one is configured, else in `auths`; returns where."""
        key = config_key(host)
        helper = self.helper_for(host)
        data = self._load()
        auths = data.setdefault("auths", {})
        for other in [k for k in auths if _key_host(k) == host and k != key]:
            del auths[other]  # one entry per registry, under the key docker writes
        if helper is not None:
            helper_store(helper, key, creds)
            auths[key] = {}  # docker records the registry with an empty entry when a helper holds it
            self._write(data)
            return f"docker-credential-{helper}"
        entry: dict[str, str] = {}
        if creds.identity_token:
            entry["auth"] = base64.b64encode(f"{creds.username}:".encode()).decode()
            entry["identitytoken"] = creds.identity_token
        else:
            entry["auth"] = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        auths[key] = entry
        self._write(data)
        return str(self.path)

    def erase(self, host: str) -> bool:
        """Forget `host`'s credentials (the helper's and the file's); False when there were none."""
        helper = self.helper_for(host)
        data = self._load()
        auths = data.get("auths") or {}
        keys = [k for k in auths if _key_host(k) == host] if isinstance(auths, dict) else []
        found = bool(keys)
        if helper is not None:
            found = helper_erase(helper, config_key(host)) or found
        if keys:
            for k in keys:
                del auths[k]
            self._write(data)
        return found

    def _write(self, data: dict[str, Any]) -> None:
        import tempfile  # login/logout only: a pull or push reads

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                json.dump(data, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _key_host(key: str) -> str:
    """The registry a config.json key names (`https://index.docker.io/v1/` → `docker.io`)."""
    try:
        return registry_host(key)
    except UsageError:
        return key


def _decode_entry(path: Path, key: str, entry: dict[str, Any]) -> Credentials | None:
    token = entry.get("identitytoken") or entry.get("identityToken") or ""
    auth = entry.get("auth") or ""
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    if auth:
        try:
            decoded = base64.b64decode(auth, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{path}: the credentials of {key!r} are not valid base64",
                                hint=f"log in again: layerbuild login {_key_host(key)}") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"{path}: the credentials of {key!r} are not USER:PASSWORD",
                                hint=f"log in again: layerbuild login {_key_host(key)}")
    if token:
        return Credentials(username=username, identity_token=str(token))
    if username or password:
        return Credentials(username=str(username), password=str(password))
    return None


# --- credential helpers (docker-credential-helpers' protocol) ----------------------------------------


def _run_helper(name: str, action: str, stdin: str) -> subprocess.CompletedProcess[str]:
    import shutil
    import subprocess  # a helper is run only where one is configured: not on every registry command

    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise RegistryError(f"credential helper {program} not found in PATH",
                            hint="install it, or remove it from credsStore/credHelpers in config.json")
    try:
        return subprocess.run([path, action], input=stdin, capture_output=True, text=True,
                              timeout=_HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper {program} {action} did not answer in {_HELPER_TIMEOUT:.0f} s") from None


def _helper_failure(name: str, action: str, result: subprocess.CompletedProcess[str]) -> RegistryError:
    # A helper's output may echo what it was given; only its first line, which helpers use for their
    # error message, is shown, and never what we sent it.
    said = (result.stdout.strip() or result.stderr.strip()).splitlines()[:1]
    detail = f": {said[0][:200]}" if said else ""
    return RegistryError(f"credential helper docker-credential-{name} {action} failed (exit {result.returncode}){detail}")


def helper_get(name: str, server: str) -> Credentials | None:
    result = _run_helper(name, "get", server)
    if result.returncode != 0:
        if _NOT_FOUND in result.stdout or _NOT_FOUND in result.stderr:
            return None
        raise _helper_failure(name, "get", result)
    try:
        data = json.loads(result.stdout)
        username, secret = str(data.get("Username") or ""), str(data.get("Secret") or "")
    except (json.JSONDecodeError, AttributeError):
        raise RegistryError(f"credential helper docker-credential-{name} get answered something that is not "
                            "its JSON format") from None
    if not secret and not username:
        return None
    if username == "<token>":  # docker's convention: the secret is an identity token
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)


def helper_store(name: str, server: str, creds: Credentials) -> None:
    if creds.identity_token:
        payload = {"ServerURL": server, "Username": "<token>", "Secret": creds.identity_token}
    else:
        payload = {"ServerURL": server, "Username": creds.username, "Secret": creds.password}
    result = _run_helper(name, "store", json.dumps(payload))
    if result.returncode != 0:
        raise _helper_failure(name, "store", result)


def helper_erase(name: str, server: str) -> bool:
    result = _run_helper(name, "erase", server)
    if result.returncode != 0:
        if _NOT_FOUND in result.stdout or _NOT_FOUND in result.stderr:
            return False
        raise _helper_failure(name, "erase", result)
    return True


class NoCredentials:
    """A credential source with nothing in it (anonymous access, or `login` checking given credentials)."""

    def get(self, host: str) -> Credentials | None:
        return None
