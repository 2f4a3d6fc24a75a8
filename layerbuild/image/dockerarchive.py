"""`docker save`'s format as an implementation of the image protocol: read and written.

`manifest.json` lists the images; each has its config (`<hex>.json`, named by its digest) and its
layers, uncompressed `layer.tar` files (what `docker load` reads on every Docker version; a layer's
diff_id is the sha256 of that file). The format has no image manifest: an image read from it, and
one written to it, is described by the Docker schema 2 manifest of its config and layers as they
are in the archive, so reading back what was written gives the digest `write` returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from layerbuild.errors import UsageError
from layerbuild.image.archivefiles import ArchiveError, ArchiveFiles, read_bytes, read_json, writing_tar
from layerbuild.image.config import ImageConfig
from layerbuild.image.manifest import DOCKER_CONFIG, DOCKER_MANIFEST, Descriptor, Manifest
from layerbuild.image.protocol import Image, Layer, peek, sha256, uncompressed_of, verified
from layerbuild.layer.compression import sniff_compression
from layerbuild.reference import familiar, normalize_tag

DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MEDIA = {"tar": DOCKER_LAYER_TAR, "gzip": DOCKER_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}


def docker_manifest(config: Descriptor, layers: Sequence[Descriptor]) -> Manifest:
    return Manifest(config=Descriptor(DOCKER_CONFIG, config.digest, config.size), layers=tuple(layers),
                    media_type=DOCKER_MANIFEST)


class DockerArchiveLayer:
    """A `layer.tar` of the archive (usually plain; gzip or zstd from some tools). Opened when first
    asked about, not before: the members of a compressed archive are best read in order."""

    def __init__(self, files: ArchiveFiles, name: str, diff_id: str) -> None:
        self.files, self.name, self.diff_id = files, name, diff_id
        self._size: int | None = None
        self._media = ""
        self._digest: str | None = None
        self._pending: BinaryIO | None = None  # the member opened to peek at, read next

    def _open(self) -> BinaryIO:
        size, src = self.files.member(self.name)
        self._size, self._media = size, _MEDIA.get(sniff_compression(peek(src, 6)), DOCKER_LAYER_TAR)
        return src

    def _reader(self) -> BinaryIO:
        src, self._pending = self._pending, None
        return src if src is not None else self._open()

    @property
    def size(self) -> int:
        if self._size is None:
            self._pending = self._open()
        assert self._size is not None
        return self._size

    @property
    def media_type(self) -> str:
        if not self._media:
            self._pending = self._open()
        return self._media

    @property
    def what(self) -> str:
        return f"layer {self.name!r}"

    @property
    def diff_size(self) -> int | None:
        return self.size if self.media_type == DOCKER_LAYER_TAR else None

    @property
    def digest(self) -> str:
        """A plain layer's digest is its diff_id; a compressed one's is named by `blobs/sha256/<hex>`
        (Docker 25+) or else computed by reading it once."""
        if self._digest is None:
            if self.media_type == DOCKER_LAYER_TAR:
                self._digest = self.diff_id
            elif (named := posixpath.basename(self.name)) and _HEX64.fullmatch(named) \
                    and posixpath.dirname(self.name).endswith("sha256"):
                self._digest = "sha256:" + named
            else:
                src = self._reader()
                h = hashlib.sha256()
                while chunk := src.read(1 << 20):
                    h.update(chunk)
                self._digest = "sha256:" + h.hexdigest()
        return self._digest

    @contextlib.contextmanager
    def compressed(self, *, verify: bool = True) -> Iterator[BinaryIO]:
        digest, size = self.digest, self.size
        src = self._reader()
        if not verify:
            yield src
            return
        with verified(src, digest, size, self.what) as reader:
            yield reader

    def uncompressed(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return uncompressed_of(self.compressed(), self.diff_id, self.what)


@dataclass
class DockerArchiveImage:
    """One image of `manifest.json`: its config, checked against its file name, and its layers."""

    config_bytes: bytes
    config: ImageConfig
    layers: tuple[Layer, ...]
    tags: tuple[str, ...]
    _manifest: Manifest | None = field(default=None, repr=False)

    @property
    def config_descriptor(self) -> Descriptor:
        return Descriptor(DOCKER_CONFIG, sha256(self.config_bytes), len(self.config_bytes))

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = docker_manifest(self.config_descriptor, [Descriptor(la.media_type, la.digest, la.size)
                                                      for la in self.layers])
        return self._manifest

    @property
    def manifest_bytes(self) -> bytes:
        return self.manifest.to_json()

    @property
    def media_type(self) -> str:
        return DOCKER_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest_bytes)


def archive_tags(names: list[str], where: str) -> tuple[str, ...]:
    tags = []
    for name in names:
        try:
            tags.append(normalize_tag(familiar(name)))
        except UsageError:
            raise ArchiveError(f"{where} has an invalid image name {name!r}") from None
    return tuple(dict.fromkeys(tags))


def read_config(raw: bytes, name: str, layer_count: int) -> ImageConfig:
    config = ImageConfig.from_json(raw)
    if len(config.diff_ids) != layer_count:
        raise ArchiveError(f"{name!r} names {len(config.diff_ids)} layers but the archive has {layer_count}")
    return config


def read_docker_archive(files: ArchiveFiles) -> Iterator[DockerArchiveImage]:
    """The images of a `docker save` archive, one at a time (an image is checked when it is reached)."""
    manifest = read_json(files, "manifest.json")
    if not isinstance(manifest, list) or not all(isinstance(e, dict) for e in manifest):
        raise ArchiveError("manifest.json must be a list of objects, one per image")
    for i, entry in enumerate(manifest):
        where = f"manifest.json entry {i}"
        config_name, layer_names = entry.get("Config"), entry.get("Layers") or []
        repo_tags = entry.get("RepoTags") or []
        if not isinstance(config_name, str) or not config_name:
            raise ArchiveError(f"{where} has no Config file name")
        if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
            raise ArchiveError(f"{where}: Layers must be a list of file names")
        if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
            raise ArchiveError(f"{where}: RepoTags must be a list of image names")
        tags = archive_tags(repo_tags, where)
        raw = read_bytes(files, config_name)
        named = os.path.basename(config_name).removesuffix(".json")
        if _HEX64.fullmatch(named) and hashlib.sha256(raw).hexdigest() != named:  # docker names it by digest
            raise ArchiveError(f"{config_name!r} hashes to sha256:{hashlib.sha256(raw).hexdigest()}, not to its name")
        config = read_config(raw, config_name, len(layer_names))
        layers = tuple(DockerArchiveLayer(files, name, diff_id)
                       for name, diff_id in zip(layer_names, config.diff_ids, strict=True))
        yield DockerArchiveImage(raw, config, layers, tags)


class DockerArchiveWriter:
    """An image as a `docker save` archive at `dest` (a deterministic tar, renamed into place whole)."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = dest

    def write(self, image: Image, tags: Sequence[str] = ()) -> str:
        config = image.config_bytes
        config_digest = image.config_descriptor.digest
        config_name = config_digest.split(":", 1)[1] + ".json"
        layer_names, descs = [], []
        with writing_tar(self.dest) as out:
            for layer in image.layers:
                hexid = layer.diff_id.split(":", 1)[1]
                out.add_dir(hexid)
                out.add_bytes(f"{hexid}/VERSION", b"1.0")
                with layer.uncompressed() as tar:
                    size = layer.diff_size
                    if size is None:  # a tar header needs the size first: spool it
                        with tempfile.TemporaryFile() as spool:
                            while chunk := tar.read(1 << 20):
                                spool.write(chunk)
                            size = spool.tell()
                            spool.seek(0)
                            out.add_stream(f"{hexid}/layer.tar", size, spool)
                    else:
                        out.add_stream(f"{hexid}/layer.tar", size, tar)
                layer_names.append(f"{hexid}/layer.tar")
                descs.append(Descriptor(DOCKER_LAYER_TAR, layer.diff_id, size))
            out.add_bytes(config_name, config)
            manifest = [{"Config": config_name, "RepoTags": list(tags) or None, "Layers": layer_names}]
            out.add_bytes("manifest.json", json.dumps(manifest, separators=(",", ":")).encode())
        return sha256(docker_manifest(Descriptor(DOCKER_CONFIG, config_digest, len(config)), descs).to_json())
