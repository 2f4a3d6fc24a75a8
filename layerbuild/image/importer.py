"""`import`: a rootfs tarball as a one-layer tagged image, its config and manifest written by this package."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from layerbuild.image.config import HistoryEntry, ImageConfig, format_created
from layerbuild.image.store_io import write_image
from layerbuild.layer.ingest import ingest_layer
from layerbuild.platforms import host_arch
from layerbuild.reference import normalize_tag
from layerbuild.store import LayerRecord, Store


@dataclass(frozen=True)
class ImportResult:
    """The image `import_rootfs` made: manifest and config digests, its one layer, and its tag."""

    manifest: str
    config: str
    layer: LayerRecord
    tag: str | None


def _created() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return format_created(seconds)


def import_rootfs(store: Store, src: BinaryIO, ref: str | None, *, architecture: str | None = None,
                  edit: Callable[[ImageConfig], ImageConfig] | None = None, message: str = "") -> ImportResult:
    """Make a one-layer image from a rootfs tarball and tag it `ref` (or leave it untagged), like
    `docker import`; `edit` changes its config (`--change`), `message` is its history comment (`-m`)."""
    tag = normalize_tag(ref) if ref else None  # refused before any blob is written
    with store.lease() as lease:
        layer = ingest_layer(store, src, what="the rootfs tarball")
        lease.add(layer.digest, layer.diff_id)
        created = _created()
        config = ImageConfig(
            architecture or host_arch(),
            "linux",
            diff_ids=(layer.diff_id,),
            history=(HistoryEntry(created=created, created_by="layerbuild import", comment=message),),
            created=created,
        )
        if edit is not None:
            config = edit(config)
        image = write_image(store, config, (tag,) if tag else (), layers=(layer,), lease=lease)
    return ImportResult(image.manifest_digest, image.config_digest, layer, tag)
