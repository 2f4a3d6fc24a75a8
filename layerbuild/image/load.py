"""`layerbuild load`: images from a `docker save` archive or an OCI image layout archive.

Nothing from the archive is trusted before it is checked: the JSON documents must have the shapes
their formats define, every blob of an OCI layout must hash to its name and have its declared size,
every layer must unpack to its config's diff_id, and each layer's entries are checked at the door
(see `layer.admit`) while it is stored. A damaged, truncated or lying archive fails with a message
that names what is wrong, and the image it fails on is not stored (a layer stored before the failure
is only an unreferenced blob that `prune` removes; images before it in the same archive stay loaded,
as with `docker load`).
"""

from __future__ import annotations

import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.image.archivefiles import ArchiveError, ArchiveFiles, DirFiles, TarFiles
from layerbuild.image.dockerarchive import read_docker_archive
from layerbuild.image.manifest import MANIFEST_TYPES, Descriptor
from layerbuild.image.ocilayout import OciLayoutImage, OciLayoutIndex, read_oci_layout
from layerbuild.image.protocol import Image, copy_image
from layerbuild.image.store_io import StoredImage
from layerbuild.image.storeimage import StoreSink
from layerbuild.layer.compression import SNIFF_BYTES, sniff_compression
from layerbuild.platforms import host_arch
from layerbuild.store import Store

__all__ = ["ArchiveError", "Loaded", "load_archive", "load_files"]

_TAR_MODES: dict[str, Literal["r:", "r:gz", "r:bz2", "r:xz"]] = {"tar": "r:", "gzip": "r:gz", "bzip2": "r:bz2",
                                                                  "xz": "r:xz"}


@dataclass(frozen=True)
class Loaded:
    image: StoredImage
    tags: tuple[str, ...]


def _store(sink: StoreSink, image: Image, tags: tuple[str, ...]) -> Loaded:
    copy_image(image, sink, tags)
    assert sink.last is not None
    return Loaded(sink.last, tags)


def platform_image(index: OciLayoutIndex, where: str) -> OciLayoutImage:
    """The image of this machine's platform in `index` (BuildKit's exporter nests one in index.json
    when it adds attestations); attestation manifests (no platform of ours) are skipped."""
    arch = host_arch()
    found: list[Descriptor] = [desc for desc, platform in index.manifests
                               if desc.media_type in MANIFEST_TYPES and platform is not None
                               and (platform.os, platform.architecture) == ("linux", arch)]
    if len(found) != 1:
        raise ArchiveError(f"{where} is an image index with {len(found) or 'no'} manifests for linux/{arch}",
                           hint="save a single-platform image (e.g. docker buildx --platform, skopeo "
                                "--override-arch)")
    return OciLayoutImage(index.files, found[0])


def load_files(store: Store, files: ArchiveFiles) -> list[Loaded]:
    """Store the images of a docker save archive or an OCI layout given as files (a tar's or a
    directory's): each one is a copy from the archive into the store."""
    sink = StoreSink(store)
    names = files.names()
    if "manifest.json" in names:
        return [_store(sink, image, image.tags) for image in read_docker_archive(files)]
    if "index.json" in names:
        out = []
        for entry in read_oci_layout(files):
            image = platform_image(entry.entry, entry.where) if isinstance(entry.entry, OciLayoutIndex) \
                else entry.entry
            out.append(_store(sink, image, entry.tags))
        return out
    raise UsageError("the archive is neither a docker save archive nor an OCI image layout")


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Errors from reading a damaged tar (or its gzip, bzip2 or xz wrapping) as ArchiveErrors."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ArchiveError(f"cannot read {path!r} as an image archive: {exc or type(exc).__name__}") from None
    except OSError as exc:
        if exc.errno is None:  # BadGzipFile and friends: the data, not the system
            raise ArchiveError(f"cannot read {path!r} as an image archive: {exc}") from None
        raise LayerbuildError(f"cannot load {path!r}: {exc}") from None


def load_archive(store: Store, path: str | os.PathLike[str]) -> list[Loaded]:
    """Store the images of the archive (or OCI layout directory) at `path`; returns them with the tags
    they got."""
    shown = os.fspath(path)
    if os.path.isdir(shown):
        if not os.path.exists(os.path.join(shown, "oci-layout")):
            raise UsageError(f"{shown!r} is a directory, not an image archive",
                             hint="give the file docker save wrote, or an OCI image layout directory")
        files = DirFiles(shown)
        try:
            with _reading(shown):
                return load_files(store, files)
        finally:
            files.close()
    try:
        with open(path, "rb") as f:
            fmt = sniff_compression(f.read(SNIFF_BYTES))
        if fmt not in _TAR_MODES:
            raise UsageError(f"cannot read {shown!r}: {fmt}-compressed archives are not supported",
                             hint="decompress it first, or give a plain, gzip, bzip2 or xz tar")
        # The format told by its magic, not tarfile's "r:*": trying every decompressor in turn can
        # read forever (xz on an endless stream of zeros).
        tar = tarfile.open(path, _TAR_MODES[fmt])  # noqa: SIM115 - closed by the `with` below
    except OSError as exc:
        raise UsageError(f"cannot read {shown!r}: {exc.strerror or exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError):
        empty = os.path.getsize(shown) == 0
        raise UsageError(f"cannot read {shown!r} as an image archive: "
                         + ("it is empty" if empty else f"it is no {fmt} tar, or a damaged one"),
                         hint="give the file `docker save` or `layerbuild save` wrote") from None
    with tar, _reading(shown):
        names = set(tar.getnames())
        if "manifest.json" in names or "index.json" in names:
            return load_files(store, TarFiles(tar))
    raise UsageError(f"{shown!r} is neither a docker save nor an OCI image archive")

