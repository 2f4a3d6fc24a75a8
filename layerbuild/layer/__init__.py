"""Deterministic tar layers: writing (with OCI whiteouts) and safe extraction."""

from layerbuild.layer.apply import ApplyResult, apply_layer
from layerbuild.layer.mapped import MappedEntry, write_mapped
from layerbuild.layer.sink import (
    MEDIA_TYPE_GZIP,
    MEDIA_TYPE_TAR,
    MEDIA_TYPE_ZSTD,
    Compression,
    LayerInfo,
)
from layerbuild.layer.sources import ChangeSet
from layerbuild.layer.tarformat import Kind
from layerbuild.layer.writer import write_changes, write_layer, write_overlay_upper

__all__ = [
    "MEDIA_TYPE_GZIP",
    "MEDIA_TYPE_TAR",
    "MEDIA_TYPE_ZSTD",
    "ApplyResult",
    "ChangeSet",
    "Compression",
    "Kind",
    "LayerInfo",
    "MappedEntry",
    "apply_layer",
    "write_changes",
    "write_layer",
    "write_mapped",
    "write_overlay_upper",
]
