"""Which compression a stream uses, told by its magic bytes: the one sniffer for layers and archives."""

from __future__ import annotations

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
SNIFF_BYTES = 6  # the longest magic below

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (GZIP_MAGIC, "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (ZSTD_MAGIC, "zstd"),
)


def sniff_compression(head: bytes) -> str:
    """'gzip', 'bzip2', 'xz' or 'zstd' when `head` (a stream's first bytes) starts with that format's
    magic, else 'tar' (uncompressed). Layers come only as gzip, zstd or tar; archives may be any."""
    return next((name for magic, name in _MAGICS if head.startswith(magic)), "tar")
