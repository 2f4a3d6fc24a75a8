"""What arrives from outside (an archive being loaded, a registry pull) is verified before it is trusted.

The one place where a descriptor's promises are checked: a blob must have its declared size and hash
to its digest, a layer must be of a media type we read, unpack to the diff_id its config names and
pass the door check of `layer.admit` (no entry outside the root, bounded by free disk space). `load`
uses these for OCI archives (through `storeimage.StoreSink`, the store's side of the image protocol);
a registry client calls the same two functions for what it pulls.
"""

from __future__ import annotations

from typing import BinaryIO

from layerbuild.errors import LayerbuildError
from layerbuild.image.manifest import DOCKER_CONFIG, Descriptor
from layerbuild.image.protocol import check_bytes
from layerbuild.store import MEDIA_CONFIG, LayerRecord, Store

# Layers we can read: OCI's and Docker's tar, tar+gzip and tar+zstd.
LAYER_TYPES = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
)
CONFIG_TYPES = (MEDIA_CONFIG, DOCKER_CONFIG)


def check_blob(data: bytes, desc: Descriptor, what: str) -> bytes:
    """`data` if it has the size and digest `desc` declares, else DigestMismatchError naming `what`."""
    return check_bytes(data, desc, what)


def receive_layer(store: Store, src: BinaryIO, desc: Descriptor, diff_id: str) -> LayerRecord:
    """Store the layer blob `desc` read from `src`, checked against `desc` and `diff_id` as it streams;
    nothing is recorded unless every check passes."""
    if desc.media_type not in LAYER_TYPES:
        raise LayerbuildError(f"layer {desc.digest} has media type {desc.media_type!r}, which layerbuild cannot "
                              "load", hint=f"layers must be one of {', '.join(LAYER_TYPES)}")
    from layerbuild.layer.ingest import ingest_layer  # (the write side only: not on push's path)

    return ingest_layer(store, src, what=f"layer {desc.digest}", expected_digest=desc.digest,
                        expected_size=desc.size, expected_diff_id=diff_id)
