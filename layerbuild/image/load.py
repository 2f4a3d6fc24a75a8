"""`layerbuild load`: images from a `docker save` archive or an OCI image layout archive.

Every layer is stored (as a zstd blob) and checked against the config's diff_ids before anything
is tagged, so a damaged or lying archive leaves no image behind. Layers are not unpacked here; a
hostile tar is refused later by the safe extractor, like any other layer.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from layerbuild.digest import is_sha256_digest
from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.image.config import ImageConfig
from layerbuild.image.manifest import Manifest
from layerbuild.image.store_io import StoredImage, write_image
from layerbuild.layer.ingest import ingest_layer
from layerbuild.reference import familiar
from layerbuild.store import LayerRecord, Store

MAX_JSON = 16 << 20


@dataclass(frozen=True)
class Loaded:
    image: StoredImage
    tags: tuple[str, ...]


def _member(tar: tarfile.TarFile, name: str) -> BinaryIO:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise LayerbuildError(f"the archive has no {name!r}", hint="is it a docker save or OCI archive?") from None
    if not member.isfile():
        raise LayerbuildError(f"{name!r} in the archive is not a file")
    data = tar.extractfile(member)
    assert data is not None
    return cast(BinaryIO, data)


def _json(tar: tarfile.TarFile, name: str) -> Any:
    data = _member(tar, name).read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise LayerbuildError(f"{name!r} in the archive is too large for a JSON document")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise LayerbuildError(f"{name!r} in the archive is not valid JSON: {exc}") from None


def _check(config: ImageConfig, layers: list[LayerRecord]) -> None:
    got = tuple(layer.diff_id for layer in layers)
    if got != config.diff_ids:
        raise LayerbuildError("the archive's layers do not match its config's diff_ids",
                              hint="the archive is damaged or was edited")


def _docker(store: Store, tar: tarfile.TarFile) -> list[Loaded]:
    out = []
    for entry in _json(tar, "manifest.json"):
        raw = _member(tar, entry["Config"]).read(MAX_JSON)
        config = ImageConfig.from_json(raw)
        layers = [ingest_layer(store, _member(tar, name)) for name in entry.get("Layers") or []]
        _check(config, layers)
        tags = tuple(familiar(t) for t in entry.get("RepoTags") or ())
        out.append(Loaded(write_image(store, config, tags, layers=layers, raw_config=raw), tags))
    return out


def _blob_name(digest: str) -> str:
    if not is_sha256_digest(digest):
        raise LayerbuildError(f"unsupported digest {digest!r} in the archive")
    return "blobs/sha256/" + digest.split(":", 1)[1]


def _oci(store: Store, tar: tarfile.TarFile) -> list[Loaded]:
    out = []
    for desc in _json(tar, "index.json").get("manifests") or []:
        manifest = Manifest.from_json(_member(tar, _blob_name(desc["digest"])).read(MAX_JSON))
        raw = _member(tar, _blob_name(manifest.config.digest)).read(MAX_JSON)
        config = ImageConfig.from_json(raw)
        layers = [ingest_layer(store, _member(tar, _blob_name(layer.digest))) for layer in manifest.layers]
        _check(config, layers)
        annotations = desc.get("annotations") or {}
        name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
        tags = (familiar(name),) if name and (":" in name or "/" in name) else ()
        out.append(Loaded(write_image(store, config, tags, layers=layers, raw_config=raw), tags))
    return out


def load_archive(store: Store, path: str | os.PathLike[str]) -> list[Loaded]:
    """Store the images of the archive at `path`; returns them with the tags they got."""
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the `with` below
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"cannot read {os.fspath(path)!r} as an image archive: {exc}") from None
    with tar:
        names = set(tar.getnames())
        if "manifest.json" in names:
            return _docker(store, tar)
        if "index.json" in names:
            return _oci(store, tar)
    raise UsageError(f"{os.fspath(path)!r} is neither a docker save nor an OCI image archive")
