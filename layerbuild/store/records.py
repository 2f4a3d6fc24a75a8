"""The typed rows of the store index: frozen values handed out by `Index`, never dicts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

ImageKind = Literal["manifest", "index", "config"]

MEDIA_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"

# The `result` of a cache record for a step that made no layer (a config-only step, a WORKDIR whose
# directory existed): a valid record that references nothing, so it needs nothing to stay valid.
NO_RESULT = ""


@dataclass(frozen=True)
class LayerRecord:
    """A stored layer blob: `digest` (compressed, what is stored) kept apart from `diff_id` (its identity)."""

    digest: str
    diff_id: str
    size: int
    diff_size: int
    media_type: str
    created: float


@dataclass(frozen=True)
class ImageRecord:
    """A manifest, image index or config blob, with the digests/diff_ids it references."""

    digest: str
    kind: ImageKind
    media_type: str
    size: int
    created: float
    refs: tuple[str, ...]


@dataclass(frozen=True)
class Tag:
    """`name` (as `name:tag`) points at a manifest digest."""

    name: str
    digest: str
    updated: float


@dataclass(frozen=True)
class CacheRecord:
    """A build-cache entry: cache key (sha256 hex) → `result` (a layer diff_id, a blob digest, or
    `NO_RESULT` for a step that made no layer)."""

    key: str
    kind: str
    result: str
    metadata_json: str
    created: float
    last_used: float

    @property
    def metadata(self) -> Any:
        return json.loads(self.metadata_json)

@dataclass(frozen=True)
class HistoryRecord:
    """The per-step keys of the last build of one Dockerfile and target, for explaining cache misses."""

    dockerfile_id: str
    target: str
    steps_json: str
    updated: float

    @property
    def steps(self) -> Any:
        return json.loads(self.steps_json)
