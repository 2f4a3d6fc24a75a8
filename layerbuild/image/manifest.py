"""OCI image manifests and descriptors as frozen values, with canonical JSON; Docker schema 2 is read too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerbuild.digest import is_sha256_digest
from layerbuild.image.config import ImageFormatError
from layerbuild.image.configjson import canonical_json, load_json
from layerbuild.store import MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPES = (MEDIA_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_INDEX, DOCKER_MANIFEST_LIST)


@dataclass(frozen=True)
class Descriptor:
    """A pointer to a blob: media type, digest, size (and optional annotations, sorted pairs)."""

    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise ImageFormatError(f"{where} must be a descriptor object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise ImageFormatError(f"{where}.mediaType is missing")
        if not isinstance(digest, str) or not is_sha256_digest(digest):
            raise ImageFormatError(f"{where}.digest {digest!r} is not a sha256 digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageFormatError(f"{where}.size must be a non-negative integer")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise ImageFormatError(f"{where}.annotations must be an object of strings")
        return cls(media_type, digest, size, tuple(sorted(annotations.items())))


@dataclass(frozen=True)
class Manifest:
    """An image manifest: the config descriptor and the layer descriptors, base layer first."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MEDIA_MANIFEST
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str | None = None  # an OCI artifact's (image-spec 1.1): what the manifest holds

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, compact), so the same image always has the same manifest digest."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Read an OCI image manifest or a Docker schema 2 manifest; an index is refused by name."""
        doc = load_json(data, "manifest")
        if not isinstance(doc, dict):
            raise ImageFormatError("manifest must be a JSON object")
        media_type = doc.get("mediaType") or MEDIA_MANIFEST
        if media_type in INDEX_TYPES or "manifests" in doc:
            raise ImageFormatError("this is an image index (several platforms), not an image manifest")
        if media_type not in MANIFEST_TYPES or doc.get("schemaVersion") != 2:
            raise ImageFormatError(
                f"unsupported manifest type {media_type!r} (schema {doc.get('schemaVersion')})"
            )
        layers = doc.get("layers") or []
        if not isinstance(layers, list):
            raise ImageFormatError("manifest.layers must be a list")
        annotations = doc.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise ImageFormatError("manifest.annotations must be an object")
        return cls(
            config=Descriptor.from_dict(doc.get("config"), "manifest.config"),
            layers=tuple(Descriptor.from_dict(d, f"manifest.layers[{i}]") for i, d in enumerate(layers)),
            media_type=media_type,
            annotations=tuple(sorted((str(k), str(v)) for k, v in annotations.items())),
            artifact_type=str(doc["artifactType"]) if isinstance(doc.get("artifactType"), str) else None,
        )


def config_descriptor(digest: str, size: int) -> Descriptor:
    return Descriptor(MEDIA_CONFIG, digest, size)
