"""Image references (`name[:tag]`, `host:port/name:tag`, `name@digest`): the one parser of them (imports only errors)."""

from __future__ import annotations

import re

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


def context_name(ref: str) -> str:
    """The name a `--build-context NAME=...` answers to, as BuildKit matches it: the familiar form
    without `:latest` (`docker.io/library/alpine:latest` and `alpine` are both `alpine`). A name that
    is no image reference (a stage name such as `build-1`, written in any case) is matched lowercased."""
    try:
        name = familiar(normalize_tag(ref))
    except UsageError:
        return ref.lower()
    return name.removesuffix(":" + DEFAULT_TAG)
