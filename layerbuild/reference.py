"""Image references (`name[:tag]`, `host:port/name:tag`, `name@digest`, docker's normalized remote names): the one
parser of them (imports only errors)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerbuild.errors import UsageError

DEFAULT_TAG = "latest"


# The reference grammar Docker's and the OCI distribution spec's names follow: lowercase path
# components joined by `.`, `_`, `__` or dashes; an optional registry host (with a port) first; a tag
# of up to 128 word characters, dots and dashes.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                     r"(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_MAX_NAME = 255


def normalize_tag(ref: str) -> str:
    """`name` → `name:latest`; `name:tag` and `host:port/name:tag` stay as they are.

    A colon after the last slash starts the tag; one before it belongs to a registry's port. A name
    that Docker would not take (uppercase, `//`, a bad tag) is refused with docker's words.
    """
    if not ref or any(c.isspace() for c in ref) or "@" in ref:
        raise UsageError(f"invalid image name {ref!r}", hint="use NAME[:TAG]")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    name, version = (ref[:colon], ref[colon + 1 :]) if colon > slash else (ref, DEFAULT_TAG)
    _check_name(ref, name, version)
    return f"{name}:{version}"


def _check_name(ref: str, name: str, version: str) -> None:
    parts = name.split("/")
    first = parts[0]
    # The first component is a registry host if it has a `.` or `:` or is `localhost`, as docker
    # decides it: `UPPER/x:1` is an uppercase repository (docker tag and docker load refuse it), while
    # `UPPER.com/x` is a host.
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not _DOMAIN.fullmatch(first):
            raise UsageError(f"invalid reference format: {ref!r} (registry host {first!r})", hint="use NAME[:TAG]")
        parts = parts[1:]
    if any(p != p.lower() for p in parts):
        raise UsageError(f"invalid reference format: repository name must be lowercase ({ref!r})",
                         hint="use NAME[:TAG] with a lowercase NAME")
    if not all(_COMPONENT.fullmatch(p) for p in parts) or len(name) > _MAX_NAME:
        raise UsageError(f"invalid reference format: {ref!r}", hint="use NAME[:TAG]: lowercase letters, digits "
                         "and separators (. _ __ -) between them, components joined by /")
    if not _TAG.fullmatch(version):
        raise UsageError(f"invalid reference format: {ref!r} (tag {version!r})",
                         hint="a tag is up to 128 letters, digits, _, . and -, not starting with . or -")


def split_tag(ref: str) -> tuple[str, str]:
    """`host:5000/app:1.0` → (`host:5000/app`, `1.0`); `app` → (`app`, `latest`)."""
    name, _, version = normalize_tag(ref).rpartition(":")
    return name, version


def familiar(name: str) -> str:
    """Docker Hub names as Docker shows them: `docker.io/library/a:1` → `a:1`, `docker.io/u/a` → `u/a`."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def split_digest_ref(ref: str) -> tuple[str, str] | None:
    """`name@sha256:…` → (`name`, `sha256:…`); None when `ref` names no digest."""
    if "@" not in ref:
        return None
    name, _, digest = ref.partition("@")
    return name, digest


# --- Remote references, named as docker names them ------------------------------------------------

DOCKER_HUB = "docker.io"                            # the domain docker writes in normalized names
DOCKER_HUB_API = "registry-1.docker.io"             # where Docker Hub's registry API answers
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"  # Docker Hub's key in config.json, as `docker login` writes it
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_IPV6_DOMAIN = re.compile(r"\[[0-9A-Fa-f:]+\](?::[0-9]+)?")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
_HEX64 = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: `domain/path[:tag][@digest]`, e.g. `docker.io/library/ubuntu:latest`.

    `domain` is the registry as names spell it (`docker.io` for Docker Hub); `registry` is the host its
    API answers on. With both a tag and a digest the digest is what is fetched; the tag is kept to show.
    """

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`docker.io/library/ubuntu`: the repository's full name, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def registry(self) -> str:
        """The host (and port) the registry API answers on: `registry-1.docker.io` for Docker Hub."""
        return api_host(self.domain)

    @property
    def identifier(self) -> str:
        """What a manifest is fetched by: the digest if pinned, else the tag (`latest` by default)."""
        return self.digest or self.tag or DEFAULT_TAG

    def repository(self) -> Reference:
        """The same repository without tag or digest."""
        return Reference(self.domain, self.path)

    def with_tag(self, tag: str) -> Reference:
        if not _TAG.fullmatch(tag):
            raise UsageError(f"invalid tag {tag!r}", hint="a tag is up to 128 letters, digits, _, . and -, "
                             "not starting with . or -")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        _check_digest(digest, digest)
        return Reference(self.domain, self.path, self.tag, digest)

    def familiar(self) -> str:
        """As docker shows it: `ubuntu:latest`, `user/app:1`, `host:5000/app@sha256:…`."""
        return familiar(str(self))

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(ref: str, *, default_tag: bool = True) -> Reference:
    """Parse `ref` as docker does (distribution/reference's ParseNormalizedNamed, then TagNameOnly).

    `ubuntu` → `docker.io/library/ubuntu:latest`; `user/app` → `docker.io/user/app:latest`; the first
    component is a registry only if it has a `.` or `:` or is `localhost` (`UPPER/x` is an uppercase
    repository, refused, as normalize_tag refuses it);
    `index.docker.io` is `docker.io`; `NAME@sha256:…` and `NAME:TAG@sha256:…` pin a digest. Without
    `default_tag`, a name with neither tag nor digest keeps `tag=None`.
    """
    hint = "use [REGISTRY/]NAME[:TAG][@DIGEST], e.g. ubuntu:22.04 or localhost:5000/app@sha256:…"
    if not ref or any(c.isspace() for c in ref) or "://" in ref:
        raise UsageError(f"invalid reference format: {ref!r}", hint=hint)
    if _HEX64.fullmatch(ref):
        raise UsageError(f"invalid repository name {ref!r}: a 64-character hexadecimal string is an image id",
                         hint="name an image by its repository, or by NAME@sha256:ID")
    remainder, at, digest = ref.partition("@")
    if at:
        _check_digest(ref, digest)
    domain, rest = _split_domain(remainder)
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    path, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, None)
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if any(p != p.lower() for p in path.split("/")):
        raise UsageError(f"invalid reference format: repository name must be lowercase ({ref!r})", hint=hint)
    if not path or not all(_COMPONENT.fullmatch(p) for p in path.split("/")):
        raise UsageError(f"invalid reference format: {ref!r}", hint="a repository name is lowercase letters, digits "
                         "and separators (. _ __ -) between them, components joined by /")
    if len(f"{domain}/{path}") > _MAX_NAME:
        raise UsageError(f"invalid reference format: {ref!r} is longer than {_MAX_NAME} characters", hint=hint)
    if tag is not None and not _TAG.fullmatch(tag):
        raise UsageError(f"invalid reference format: {ref!r} (tag {tag!r})",
                         hint="a tag is up to 128 letters, digits, _, . and -, not starting with . or -")
    if tag is None and not at and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest if at else None)


def _split_domain(name: str) -> tuple[str, str]:
    """(`domain`, `rest`) as docker's splitDockerDomain decides it, the domain's syntax checked."""
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        return DOCKER_HUB, name
    if not (_DOMAIN.fullmatch(first) or _IPV6_DOMAIN.fullmatch(first)):
        raise UsageError(f"invalid reference format: {name!r} (registry host {first!r})",
                         hint="a registry is HOST or HOST:PORT, e.g. localhost:5000 or registry.example.com")
    return (DOCKER_HUB if first == "index.docker.io" else first), rest


def _check_digest(ref: str, digest: str) -> None:
    if not _DIGEST.fullmatch(digest):
        raise UsageError(f"invalid reference format: {ref!r} (digest {digest!r})",
                         hint="a digest is sha256: and 64 lowercase hexadecimal digits")
    algorithm, _, hexpart = digest.partition(":")
    if algorithm not in _DIGEST_HEX:
        raise UsageError(f"unsupported digest algorithm {algorithm!r} in {ref!r}", hint="use sha256 (or sha512)")
    if len(hexpart) != _DIGEST_HEX[algorithm] or hexpart != hexpart.lower():
        raise UsageError(f"invalid reference format: {ref!r} (digest {digest!r})",
                         hint=f"a {algorithm} digest has {_DIGEST_HEX[algorithm]} lowercase hexadecimal digits")


def api_host(domain: str) -> str:
    """The host a registry's API answers on for a domain of a name (`docker.io` → `registry-1.docker.io`)."""
    return DOCKER_HUB_API if domain == DOCKER_HUB else domain


def registry_host(server: str | None) -> str:
    """The registry a `login`/`logout` argument names, as a config key's host: `docker.io` for Docker Hub
    (and for none given); `https://host:5000/v2/` → `host:5000`."""
    if not server:
        return DOCKER_HUB
    host = server.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme):]
    host = host.split("/", 1)[0]
    if not host or not (_DOMAIN.fullmatch(host) or _IPV6_DOMAIN.fullmatch(host)):
        raise UsageError(f"invalid registry name {server!r}", hint="name a registry as HOST or HOST:PORT")
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host


def context_name(ref: str) -> str:
    """The name a `--build-context NAME=...` answers to, as BuildKit matches it: the familiar form
    without `:latest` (`docker.io/library/alpine:latest` and `alpine` are both `alpine`). A name that
    is no image reference (a stage name such as `build-1`, written in any case) is matched lowercased."""
    try:
        name = familiar(normalize_tag(ref))
    except UsageError:
        return ref.lower()
    return name.removesuffix(":" + DEFAULT_TAG)
