"""OCI image manifests, configs, layouts and archives.

An image's id is its config digest (as in Docker); tags point at manifest digests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerbuild.lazy import lazy_getattr

if TYPE_CHECKING:
    from layerbuild.image.config import (
        ContainerConfig,
        Healthcheck,
        HistoryEntry,
        ImageConfig,
        ImageFormatError,
        format_created,
        normalize_port,
        parse_created,
    )
    from layerbuild.image.export import LocalExport, export_local, export_tar
    from layerbuild.image.flatten import TarExport, write_flat_tar
    from layerbuild.image.importer import ImportResult, import_rootfs
    from layerbuild.image.manifest import Descriptor, Manifest
    from layerbuild.image.protocol import Image, ImageIndex, ImageSink, Layer, Platform, copy_image
    from layerbuild.image.receive import check_blob, receive_layer
    from layerbuild.image.store_io import (
        ImageNotFoundError,
        StoredImage,
        list_images,
        load_image,
        read_blob,
        resolve_image,
        resolve_manifest,
        tag_image,
        untag_image,
        write_image,
    )
    from layerbuild.image.storeimage import StoreImage, StoreSink, store_image
    from layerbuild.reference import split_tag

# Loaded on first use: `run` and `ps` need the config, not the exporters.
_LAZY = {
    "ContainerConfig": "layerbuild.image.config",
    "Descriptor": "layerbuild.image.manifest",
    "Healthcheck": "layerbuild.image.config",
    "HistoryEntry": "layerbuild.image.config",
    "Image": "layerbuild.image.protocol",
    "ImageConfig": "layerbuild.image.config",
    "ImageFormatError": "layerbuild.image.config",
    "ImageIndex": "layerbuild.image.protocol",
    "ImageNotFoundError": "layerbuild.image.store_io",
    "ImageSink": "layerbuild.image.protocol",
    "ImportResult": "layerbuild.image.importer",
    "Layer": "layerbuild.image.protocol",
    "LocalExport": "layerbuild.image.export",
    "Manifest": "layerbuild.image.manifest",
    "Platform": "layerbuild.image.protocol",
    "StoreImage": "layerbuild.image.storeimage",
    "StoreSink": "layerbuild.image.storeimage",
    "StoredImage": "layerbuild.image.store_io",
    "TarExport": "layerbuild.image.flatten",
    "check_blob": "layerbuild.image.receive",
    "copy_image": "layerbuild.image.protocol",
    "export_local": "layerbuild.image.export",
    "export_tar": "layerbuild.image.export",
    "format_created": "layerbuild.image.config",
    "import_rootfs": "layerbuild.image.importer",
    "list_images": "layerbuild.image.store_io",
    "load_image": "layerbuild.image.store_io",
    "normalize_port": "layerbuild.image.config",
    "parse_created": "layerbuild.image.config",
    "read_blob": "layerbuild.image.store_io",
    "receive_layer": "layerbuild.image.receive",
    "resolve_image": "layerbuild.image.store_io",
    "resolve_manifest": "layerbuild.image.store_io",
    "split_tag": "layerbuild.reference",
    "store_image": "layerbuild.image.storeimage",
    "tag_image": "layerbuild.image.store_io",
    "untag_image": "layerbuild.image.store_io",
    "write_flat_tar": "layerbuild.image.flatten",
    "write_image": "layerbuild.image.store_io",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "ContainerConfig",
    "Descriptor",
    "Healthcheck",
    "HistoryEntry",
    "Image",
    "ImageConfig",
    "ImageFormatError",
    "ImageIndex",
    "ImageNotFoundError",
    "ImageSink",
    "ImportResult",
    "Layer",
    "LocalExport",
    "Manifest",
    "Platform",
    "StoreImage",
    "StoreSink",
    "StoredImage",
    "TarExport",
    "check_blob",
    "copy_image",
    "export_local",
    "export_tar",
    "format_created",
    "import_rootfs",
    "list_images",
    "load_image",
    "normalize_port",
    "parse_created",
    "read_blob",
    "receive_layer",
    "resolve_image",
    "resolve_manifest",
    "split_tag",
    "store_image",
    "tag_image",
    "untag_image",
    "write_flat_tar",
    "write_image",
]
