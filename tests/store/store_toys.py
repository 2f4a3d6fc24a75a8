"""Toy images for store tests: manifests and configs recorded the way the image package will."""

from __future__ import annotations

import json
from dataclasses import dataclass

from layerbuild.store import MEDIA_CONFIG, MEDIA_LAYER_TAR, MEDIA_MANIFEST, Store


@dataclass(frozen=True)
class ToyImage:
    manifest: str
    config: str
    layers: tuple[str, ...]  # blob digests (uncompressed tar stand-ins: digest == diff_id)


def put_layer(store: Store, content: bytes) -> str:
    info = store.blobs.put(content)
    store.index.put_layer(info.digest, info.digest, info.size, info.size, MEDIA_LAYER_TAR)
    return info.digest


def put_image(store: Store, layer_contents: list[bytes], tag: str | None = None, salt: str = "") -> ToyImage:
    """Store a manifest + config over the given layers, the way the image package will."""
    layers = [put_layer(store, c) for c in layer_contents]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": layers}, "salt": salt}).encode()
    cinfo = store.blobs.put(config)
    store.index.put_image(cinfo.digest, "config", MEDIA_CONFIG, cinfo.size, layers)
    manifest = json.dumps({"config": cinfo.digest, "layers": layers}).encode()
    minfo = store.blobs.put(manifest)
    store.index.put_image(minfo.digest, "manifest", MEDIA_MANIFEST, minfo.size, [cinfo.digest, *layers])
    if tag:
        store.index.set_tag(tag, minfo.digest)
    return ToyImage(minfo.digest, cinfo.digest, tuple(layers))
