"""`save` and `build --output type=oci|docker`: an image of the store copied into an archive.

`oci`: an OCI image layout in a tar (see `ocilayout`), gzip layers by default (as BuildKit's exporter
writes them and every OCI tool reads them; the gzip blobs are made once and kept in the store) or
the zstd blobs as stored. `docker`: `docker save`'s format (see `dockerarchive`). Each is one
`copy_image` from the store's image to the archive's writer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from layerbuild.errors import UsageError
from layerbuild.image.dockerarchive import DockerArchiveWriter
from layerbuild.image.ocilayout import OciLayoutWriter
from layerbuild.image.protocol import copy_image
from layerbuild.image.store_io import StoredImage
from layerbuild.image.storeimage import gzip_variant, store_image
from layerbuild.store import Store

__all__ = ["export_docker", "export_oci", "gzip_variant", "save"]


def export_oci(store: Store, image: StoredImage, dest: str | os.PathLike[str], tags: Sequence[str] = (), *,
               compression: str = "gzip", directory: bool = False) -> str:
    """Write `image` as an OCI image layout at `dest` (a tar, or a new directory); `tags` (default: the
    image's) become ref names in index.json. Returns the manifest digest written."""
    if compression not in ("gzip", "zstd"):
        raise UsageError(f"unknown compression {compression!r}", hint="use gzip or zstd")
    source = store_image(store, image, compression=compression)
    return copy_image(source, OciLayoutWriter(dest, directory=directory), tuple(tags or image.tags))


def export_docker(store: Store, image: StoredImage, dest: str | os.PathLike[str], tags: Sequence[str] = ()) -> str:
    """Write `image` in `docker save` format at `dest`: what `docker load -i` reads."""
    return copy_image(store_image(store, image), DockerArchiveWriter(dest), tuple(tags or image.tags))


def save(store: Store, image: StoredImage, dest: str | os.PathLike[str], fmt: str, tags: Sequence[str] = (),
         *, compression: str = "gzip") -> str:
    """`layerbuild save` / `--output type=oci|docker`."""
    if fmt == "oci":
        return export_oci(store, image, dest, tags, compression=compression)
    if fmt == "docker":
        return export_docker(store, image, dest, tags)
    raise UsageError(f"unknown archive format {fmt!r}", hint="use docker or oci")
