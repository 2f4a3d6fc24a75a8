"""Digests: sha256 for OCI identities and for cache keys (which a shared cache carries between machines:
no one who can write to it may forge a collision), xxh3-128 for local change detection."""

from __future__ import annotations

import hashlib
import re

import xxhash

_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    """The OCI digest string (`sha256:<hex>`) of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_sha256_digest(value: str) -> bool:
    return bool(_SHA256_RE.match(value))


def split_digest(digest: str) -> tuple[str, str]:
    """`sha256:abc…` → (`sha256`, `abc…`); raises ValueError on anything else."""
    if not is_sha256_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    algo, _, hexpart = digest.partition(":")
    return algo, hexpart


def key_hash(data: bytes) -> str:
    """The hash of cache keys and of the content they cover (sha256, hex): collision-resistant, as a
    key that travels to a shared cache must be."""
    return hashlib.sha256(data).hexdigest()


def xxh3(data: bytes) -> str:
    """The fast non-cryptographic hash (xxh3-128, hex) used for keys and change detection."""
    return xxhash.xxh3_128_hexdigest(data)
