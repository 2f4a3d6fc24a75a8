"""The content-addressed store: sha256 blobs and the SQLite index under one root."""

from __future__ import annotations

from layerbuild.lazy import lazy_getattr

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.store.blobs import BlobInfo, BlobNotFoundError, BlobStore, BlobWriter, FileBlobStore
    from layerbuild.store.fsck import FsckProblem, FsckReport, fsck
    from layerbuild.store.index import Index
    from layerbuild.store.layout import Layout, resolve_root
    from layerbuild.store.maintenance import DfEntry, DfReport, PruneReport, df, prune
    from layerbuild.store.records import (
        MEDIA_CONFIG,
        MEDIA_INDEX,
        MEDIA_LAYER_GZIP,
        MEDIA_LAYER_TAR,
        MEDIA_LAYER_ZSTD,
        MEDIA_MANIFEST,
        NO_RESULT,
        CacheRecord,
        HistoryRecord,
        ImageRecord,
        LayerRecord,
        Tag,
    )
    from layerbuild.store.snapshots import Snapshots
    from layerbuild.store.store import Lease, Store

# Loaded on first use: the CLI's fast paths touch only `layout` and `peek`, not SQLite or zstd.
_LAZY = {
    "BlobInfo": "layerbuild.store.blobs",
    "BlobNotFoundError": "layerbuild.store.blobs",
    "BlobStore": "layerbuild.store.blobs",
    "BlobWriter": "layerbuild.store.blobs",
    "CacheRecord": "layerbuild.store.records",
    "DfEntry": "layerbuild.store.maintenance",
    "DfReport": "layerbuild.store.maintenance",
    "FileBlobStore": "layerbuild.store.blobs",
    "FsckProblem": "layerbuild.store.fsck",
    "FsckReport": "layerbuild.store.fsck",
    "HistoryRecord": "layerbuild.store.records",
    "ImageRecord": "layerbuild.store.records",
    "Index": "layerbuild.store.index",
    "LayerRecord": "layerbuild.store.records",
    "Layout": "layerbuild.store.layout",
    "Lease": "layerbuild.store.store",
    "MEDIA_CONFIG": "layerbuild.store.records",
    "MEDIA_INDEX": "layerbuild.store.records",
    "MEDIA_LAYER_GZIP": "layerbuild.store.records",
    "MEDIA_LAYER_TAR": "layerbuild.store.records",
    "MEDIA_LAYER_ZSTD": "layerbuild.store.records",
    "MEDIA_MANIFEST": "layerbuild.store.records",
    "NO_RESULT": "layerbuild.store.records",
    "PruneReport": "layerbuild.store.maintenance",
    "Snapshots": "layerbuild.store.snapshots",
    "Store": "layerbuild.store.store",
    "Tag": "layerbuild.store.records",
    "df": "layerbuild.store.maintenance",
    "fsck": "layerbuild.store.fsck",
    "prune": "layerbuild.store.maintenance",
    "resolve_root": "layerbuild.store.layout",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "MEDIA_CONFIG",
    "MEDIA_INDEX",
    "MEDIA_LAYER_GZIP",
    "MEDIA_LAYER_TAR",
    "MEDIA_LAYER_ZSTD",
    "MEDIA_MANIFEST",
    "NO_RESULT",
    "BlobInfo",
    "BlobNotFoundError",
    "BlobStore",
    "BlobWriter",
    "CacheRecord",
    "DfEntry",
    "DfReport",
    "FileBlobStore",
    "FsckProblem",
    "FsckReport",
    "HistoryRecord",
    "ImageRecord",
    "Index",
    "LayerRecord",
    "Layout",
    "Lease",
    "PruneReport",
    "Snapshots",
    "Store",
    "Tag",
    "df",
    "fsck",
    "prune",
    "resolve_root",
]
