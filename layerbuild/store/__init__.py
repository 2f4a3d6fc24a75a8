"""The content-addressed store: sha256 blobs and the SQLite index under one root."""

from layerbuild.store.blobs import BlobInfo, BlobNotFoundError, BlobStore, BlobWriter, FileBlobStore
from layerbuild.store.fsck import FsckProblem, FsckReport, fsck
from layerbuild.store.index import Index
from layerbuild.store.ingest import ImportResult, import_rootfs, ingest_layer, normalize_tag
from layerbuild.store.layout import Layout, resolve_root
from layerbuild.store.maintenance import DfEntry, DfReport, PruneReport, df, prune
from layerbuild.store.records import (
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR,
    MEDIA_LAYER_ZSTD,
    MEDIA_MANIFEST,
    CacheRecord,
    HistoryRecord,
    ImageRecord,
    LayerRecord,
    Tag,
)
from layerbuild.store.snapshots import Snapshots
from layerbuild.store.store import Lease, Store

__all__ = [
    "MEDIA_CONFIG",
    "MEDIA_INDEX",
    "MEDIA_LAYER_GZIP",
    "MEDIA_LAYER_TAR",
    "MEDIA_LAYER_ZSTD",
    "MEDIA_MANIFEST",
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
    "ImportResult",
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
    "import_rootfs",
    "ingest_layer",
    "normalize_tag",
    "prune",
    "resolve_root",
]
