"""A test kit for the image protocol (`layerbuild.image.protocol`), used by the tests of every
implementation: `random_image` and `random_index` make images in memory (layers of random files,
gzip, zstd or plain, OCI or Docker media types, multi-platform indexes), and `validate_image` /
`validate_index` check any implementation's image against the contracts: digests and sizes match,
the diff_ids are the config's rootfs, the documents follow their schemas, and the readers verify.
`damage_*` and `assert_readers_catch` check that a tampered blob is caught."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from layerbuild.errors import DigestMismatchError
from layerbuild.image.config import HistoryEntry, ImageConfig
from layerbuild.image.manifest import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    Descriptor,
    Manifest,
)
from layerbuild.image.protocol import (
    Image,
    ImageIndex,
    Layer,
    Platform,
    sha256,
    uncompressed_of,
    verified,
)
from layerbuild.store import MEDIA_CONFIG, MEDIA_INDEX, MEDIA_MANIFEST
from tests.image.schemas import validate

OCI_LAYER = {"tar": "application/vnd.oci.image.layer.v1.tar",
             "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
DOCKER_LAYER = {"tar": "application/vnd.docker.image.rootfs.diff.tar",
                "gzip": "application/vnd.docker.image.rootfs.diff.tar.gzip"}
COMPRESSIONS = ("gzip", "zstd", "tar")
AMD64 = Platform("linux", "amd64")


def random_tar(rng: random.Random, files: int = 6, max_size: int = 40_000) -> bytes:
    """A tar of random directories, files (random and compressible content) and a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = [f"d{rng.randrange(1000)}", f"d{rng.randrange(1000)}/e{rng.randrange(1000)}"]
        for d in dict.fromkeys(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
            tar.addfile(info)
        for i in range(files):
            size = rng.randrange(max_size)
            data = rng.randbytes(size) if rng.random() < 0.5 else (b"layer text %d " % i) * (size // 12)
            info = tarfile.TarInfo(f"{rng.choice(dirs)}/f{i}-{rng.randrange(1 << 30):x}")
            info.size, info.mode, info.mtime = len(data), rng.choice((0o644, 0o755, 0o600)), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{dirs[0]}/link")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "../elsewhere", 1_700_000_000
        tar.addfile(link)
    return buf.getvalue()


def compress(tar: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(tar, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(tar)
    return tar


@dataclass(frozen=True)
class MemoryLayer:
    """A layer held in memory; its readers verify like every implementation's."""

    blob: bytes
    tar: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.blob)

    @property
    def diff_id(self) -> str:
        return sha256(self.tar)

    @property
    def size(self) -> int:
        return len(self.blob)

    @property
    def diff_size(self) -> int | None:
        return len(self.tar)

    @contextlib.contextmanager
    def compressed(self, *, verify: bool = True) -> Iterator[BinaryIO]:
        if not verify:
            yield io.BytesIO(self.blob)
            return
        with verified(io.BytesIO(self.blob), self.digest, self.size, f"layer {self.digest}") as reader:
            yield reader

    def uncompressed(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return uncompressed_of(self.compressed(), self.diff_id, f"layer {self.digest}")


@dataclass(frozen=True)
class MemoryImage:
    """An image held in memory: canonical manifest and config bytes of its layers."""

    layers: tuple[Layer, ...]
    config_bytes: bytes
    docker: bool = False
    manifest: Manifest = field(init=False)
    manifest_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        config = Descriptor(DOCKER_CONFIG if self.docker else MEDIA_CONFIG, sha256(self.config_bytes),
                            len(self.config_bytes))
        manifest = Manifest(config, tuple(Descriptor(la.media_type, la.digest, la.size) for la in self.layers),
                            media_type=DOCKER_MANIFEST if self.docker else MEDIA_MANIFEST)
        object.__setattr__(self, "manifest", manifest)
        object.__setattr__(self, "manifest_bytes", manifest.to_json())

    @property
    def media_type(self) -> str:
        return self.manifest.media_type

    @property
    def digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def config_descriptor(self) -> Descriptor:
        return self.manifest.config

    @property
    def config(self) -> ImageConfig:
        return ImageConfig.from_json(self.config_bytes)


def random_image(rng: random.Random, *, layers: int = 3, compressions: Sequence[str] = COMPRESSIONS,
                 docker: bool = False, platform: Platform = AMD64) -> MemoryImage:
    """An image of `layers` random layers, compressed in turn as `compressions` says, with OCI or
    (`docker`) Docker media types (Docker's schema 2 has no zstd type: its zstd layers are gzip)."""
    made: list[Layer] = []
    config = ImageConfig(platform.architecture, platform.os)
    for i in range(layers):
        tar = random_tar(rng)
        kind = compressions[i % len(compressions)]
        if docker and kind == "zstd":
            kind = "gzip"
        media = DOCKER_LAYER[kind] if docker else OCI_LAYER[kind]
        layer = MemoryLayer(compress(tar, kind), tar, media)
        made.append(layer)
        config = config.with_layer(layer.diff_id, HistoryEntry(created="2024-01-02T03:04:05Z",
                                                               created_by=f"COPY layer {i}"))
    raw = json.loads(config.to_json())
    raw["config"] = {"Env": [f"RANDOM={rng.randrange(1 << 30)}", "PATH=/usr/bin"], "Cmd": ["/bin/sh"],
                     "Labels": {"kit": str(rng.random())}}
    if platform.variant:
        raw["variant"] = platform.variant
    return MemoryImage(tuple(made), json.dumps(raw, sort_keys=True, separators=(",", ":")).encode(), docker)


@dataclass(frozen=True)
class MemoryIndex:
    """A multi-platform image held in memory."""

    images: tuple[tuple[MemoryImage, Platform], ...]
    docker: bool = False

    @property
    def media_type(self) -> str:
        return DOCKER_MANIFEST_LIST if self.docker else MEDIA_INDEX

    @property
    def index_bytes(self) -> bytes:
        doc = {"schemaVersion": 2, "mediaType": self.media_type,
               "manifests": [{"mediaType": im.media_type, "digest": im.digest, "size": len(im.manifest_bytes),
                              "platform": p.to_dict()} for im, p in self.images]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        return sha256(self.index_bytes)

    @property
    def manifests(self) -> tuple[tuple[Descriptor, Platform | None], ...]:
        return tuple((Descriptor(im.media_type, im.digest, len(im.manifest_bytes)), p) for im, p in self.images)

    def image(self, digest: str) -> MemoryImage:
        return next(im for im, _ in self.images if im.digest == digest)


PLATFORMS = (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"), Platform("linux", "arm", "v7"))


def random_index(rng: random.Random, *, docker: bool = False, platforms: Sequence[Platform] = PLATFORMS,
                 shared_base: bool = True) -> MemoryIndex:
    """One random image per platform; with `shared_base` they share their first layer, as real
    multi-platform images often share a data layer."""
    images = [random_image(rng, layers=2, docker=docker, platform=p) for p in platforms]
    if shared_base:
        base = images[0].layers[0]
        images = [_with_base(im, base) for im in images]
    return MemoryIndex(tuple(zip(images, platforms, strict=True)), docker)


def _with_base(image: MemoryImage, base: Layer) -> MemoryImage:
    raw = json.loads(image.config_bytes)
    raw["rootfs"]["diff_ids"][0] = base.diff_id
    return MemoryImage((base, *image.layers[1:]), json.dumps(raw, sort_keys=True, separators=(",", ":")).encode(),
                       image.docker)


def _read_all(src: BinaryIO) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    while chunk := src.read(1 << 16):
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def validate_layer(layer: Layer) -> None:
    """Both readers give what the layer's digest, size, diff_id and diff_size say."""
    with layer.compressed() as src:
        assert _read_all(src) == (layer.digest, layer.size), layer.digest
    with layer.uncompressed() as tar:
        diff_id, n = _read_all(tar)
    assert diff_id == layer.diff_id, layer.digest
    assert layer.diff_size in (None, n)
    with layer.compressed() as src:  # a consumer that stops early still gets the blob checked
        src.read(10)
    with layer.uncompressed() as tar:
        tar.read(10)


def validate_image(image: Image, *, layers: bool = True) -> None:
    """Check `image` against the protocol's contracts and its documents against their schemas."""
    assert isinstance(image, Image)
    assert sha256(image.manifest_bytes) == image.digest
    manifest = Manifest.from_json(image.manifest_bytes)
    assert manifest == image.manifest
    assert manifest.media_type == image.media_type
    validate(image.manifest_bytes, image.media_type)
    assert image.config_descriptor == manifest.config
    assert sha256(image.config_bytes) == manifest.config.digest
    assert len(image.config_bytes) == manifest.config.size
    validate(image.config_bytes, manifest.config.media_type)
    config = ImageConfig.from_json(image.config_bytes)
    assert config == image.config
    assert json.loads(image.config_bytes)["rootfs"]["diff_ids"] == [la.diff_id for la in image.layers]
    assert len(image.layers) == len(manifest.layers)
    for layer, desc in zip(image.layers, manifest.layers, strict=True):
        assert isinstance(layer, Layer)
        assert (layer.media_type, layer.digest, layer.size) == (desc.media_type, desc.digest, desc.size)
        if layers:
            validate_layer(layer)


def validate_index(index: ImageIndex) -> None:
    assert isinstance(index, ImageIndex)
    assert sha256(index.index_bytes) == index.digest
    doc = validate(index.index_bytes, index.media_type)
    assert [(d["digest"], d["size"]) for d in doc["manifests"]] == [(d.digest, d.size) for d, _ in index.manifests]
    for desc, platform in index.manifests:
        image = index.image(desc.digest)
        assert (image.digest, len(image.manifest_bytes), image.media_type) == (desc.digest, desc.size,
                                                                               desc.media_type)
        if platform is not None:
            assert (image.config.os, image.config.architecture) == (platform.os, platform.architecture)
        validate_image(image)


def assert_readers_catch(layer: Layer) -> None:
    """Both readers of a tampered layer raise DigestMismatchError (CorruptBlobError for the store)."""
    with pytest.raises(DigestMismatchError), layer.compressed() as src:
        _read_all(src)
    with pytest.raises(DigestMismatchError), layer.compressed() as src:
        src.read(1)  # stopped early: the rest is read at the end of the block, and checked
    with pytest.raises(DigestMismatchError), layer.uncompressed() as tar:
        _read_all(tar)


def flip_byte(path: Path, offset: int) -> None:
    """Change the byte at `offset` of the file at `path` (made writable first)."""
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x55]))


def damage_tar_member(archive: Path, member: str) -> None:
    """Flip a byte in the middle of the data of `member` of the (plain) tar at `archive`."""
    with tarfile.open(archive) as tar:
        info = tar.getmember(member)
        offset = info.offset_data + info.size // 2
    flip_byte(archive, offset)
