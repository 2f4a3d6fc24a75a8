"""OCI image manifests, configs, layouts and archives.

An image's id is its config digest (as in Docker); tags point at manifest digests.
"""

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
from layerbuild.image.manifest import Descriptor, Manifest
from layerbuild.image.store_io import (
    ImageNotFoundError,
    StoredImage,
    list_images,
    load_image,
    read_blob,
    resolve_image,
    resolve_manifest,
    split_tag,
    tag_image,
    untag_image,
    write_image,
)

__all__ = [
    "ContainerConfig",
    "Descriptor",
    "Healthcheck",
    "HistoryEntry",
    "ImageConfig",
    "ImageFormatError",
    "ImageNotFoundError",
    "LocalExport",
    "Manifest",
    "StoredImage",
    "TarExport",
    "export_local",
    "export_tar",
    "format_created",
    "list_images",
    "load_image",
    "normalize_port",
    "parse_created",
    "read_blob",
    "resolve_image",
    "resolve_manifest",
    "split_tag",
    "tag_image",
    "untag_image",
    "write_flat_tar",
    "write_image",
]
