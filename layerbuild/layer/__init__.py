"""Deterministic tar layers: writing (with OCI whiteouts) and safe extraction.

The names below load their module on first use, so a pull (which needs only the compression sniffer
and the reader) does not import the writers and the extractor."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerbuild.lazy import lazy_getattr

if TYPE_CHECKING:
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

_LAZY = {
    "ApplyResult": "layerbuild.layer.apply",
    "apply_layer": "layerbuild.layer.apply",
    "MappedEntry": "layerbuild.layer.mapped",
    "write_mapped": "layerbuild.layer.mapped",
    "MEDIA_TYPE_GZIP": "layerbuild.layer.sink",
    "MEDIA_TYPE_TAR": "layerbuild.layer.sink",
    "MEDIA_TYPE_ZSTD": "layerbuild.layer.sink",
    "Compression": "layerbuild.layer.sink",
    "LayerInfo": "layerbuild.layer.sink",
    "ChangeSet": "layerbuild.layer.sources",
    "Kind": "layerbuild.layer.tarformat",
    "write_changes": "layerbuild.layer.writer",
    "write_layer": "layerbuild.layer.writer",
    "write_overlay_upper": "layerbuild.layer.writer",
}

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

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
