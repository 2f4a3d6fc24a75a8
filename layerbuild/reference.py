"""Image references (`name[:tag]`, `host:port/name:tag`, `name@digest`): the one parser of them (imports only errors)."""

from __future__ import annotations

from layerbuild.errors import UsageError

DEFAULT_TAG = "latest"


def normalize_tag(ref: str) -> str:
    """`name` → `name:latest`; `name:tag` and `host:port/name:tag` stay as they are.

    A colon after the last slash starts the tag; one before it belongs to a registry's port.
    """
    if not ref or any(c.isspace() for c in ref) or "@" in ref:
        raise UsageError(f"invalid image name {ref!r}", hint="use NAME[:TAG]")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref if colon > slash else f"{ref}:{DEFAULT_TAG}"


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
