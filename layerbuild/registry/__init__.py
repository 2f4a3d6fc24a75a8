"""Push and pull images and cache through an OCI distribution registry.

`RegistryClient` (client.py) is the distribution API: manifests and blobs verified as they arrive,
uploads, mounts and tags; `session.py` reaches one registry (TLS, auth, retries, redirects),
`credentials.py` reads and writes docker's config.json and credential helpers, `failures.py` says
what went wrong in plain words. What a pull receives is trusted only after
`layerbuild.image.check_blob` (manifests, configs) and `layerbuild.image.receive_layer` (layers:
digest, size, diff_id and the archive door check).
"""

from __future__ import annotations

from layerbuild.registry.client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobSource,
    Descriptor,
    Manifest,
    RegistryClient,
)
from layerbuild.registry.credentials import Credentials, DockerConfig
from layerbuild.registry.transport import RetryPolicy

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "BlobSource",
    "Credentials",
    "Descriptor",
    "DockerConfig",
    "Manifest",
    "RegistryClient",
    "RetryPolicy",
]
