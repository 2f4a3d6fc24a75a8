"""The OCI image layout (in a tar, or a directory) as an implementation of the image protocol.

`oci-layout`, `index.json` and `blobs/sha256/<hex>`: the layout BuildKit's `type=oci` exporter and
`skopeo copy oci-archive:` speak. Every blob read is checked against the descriptor that named it
(size before a byte is read, digest at its end); an image index (multi-platform, or BuildKit's with
attestations) is read as an ImageIndex. The writer puts the manifest, then the config and layer
blobs in digest order, then `index.json` and `oci-layout` into a temp file or directory that is
renamed into place when whole, so the bytes depend on the image alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from layerbuild.digest import is_sha256_digest
from layerbuild.image.archivefiles import (
    ArchiveError,
    ArchiveFiles,
    read_bytes,
    read_json,
    writing_dir,
    writing_tar,
)
from layerbuild.image.config import ImageConfig
from layerbuild.image.dockerarchive import archive_tags, read_config
from layerbuild.image.manifest import INDEX_TYPES, MANIFEST_TYPES, Descriptor, Manifest
from layerbuild.image.protocol import DescribedLayer, Image, ImageIndex, Platform, sha256, verified
from layerbuild.image.receive import CONFIG_TYPES
from layerbuild.reference import split_tag
from layerbuild.store import MEDIA_INDEX

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def blob_name(desc: Descriptor) -> str:
    if not is_sha256_digest(desc.digest):
        raise ArchiveError(f"unsupported digest {desc.digest!r} in the archive")
    return "blobs/sha256/" + desc.digest.split(":", 1)[1]


@dataclass(frozen=True)
class OciLayoutLayer(DescribedLayer):
    """A layer blob of the layout, as its manifest describes it."""

    files: ArchiveFiles
    desc: Descriptor
    diff_id: str

    @contextlib.contextmanager
    def compressed(self, *, verify: bool = True) -> Iterator[BinaryIO]:
        name = blob_name(self.desc)
        size, src = self.files.member(name)
        if size != self.desc.size:  # before reading a byte of it
            raise ArchiveError(f"{name!r} has {size} bytes, not the {self.desc.size} its descriptor declares")
        if not verify:
            yield src
            return
        with verified(src, self.desc.digest, self.desc.size, self.what) as reader:
            yield reader


@dataclass
class OciLayoutImage:
    """The image whose manifest `desc` names; manifest and config are read and checked when made."""

    files: ArchiveFiles
    desc: Descriptor
    manifest_bytes: bytes = field(init=False, repr=False)
    manifest: Manifest = field(init=False)
    config_bytes: bytes = field(init=False, repr=False)
    config: ImageConfig = field(init=False)

    def __post_init__(self) -> None:
        if self.desc.media_type not in MANIFEST_TYPES:
            raise ArchiveError(f"{self.desc.digest} has media type {self.desc.media_type!r}, not an image "
                               "manifest's")
        self.manifest_bytes = read_bytes(self.files, blob_name(self.desc), self.desc)
        self.manifest = Manifest.from_json(self.manifest_bytes)
        config = self.manifest.config
        if config.media_type not in CONFIG_TYPES:
            raise ArchiveError(f"manifest {self.desc.digest} has a config of media type {config.media_type!r}")
        self.config_bytes = read_bytes(self.files, blob_name(config), config)
        self.config = read_config(self.config_bytes, blob_name(config), len(self.manifest.layers))

    @property
    def media_type(self) -> str:
        return self.desc.media_type

    @property
    def digest(self) -> str:
        return self.desc.digest

    @property
    def config_descriptor(self) -> Descriptor:
        return self.manifest.config

    @property
    def layers(self) -> tuple[OciLayoutLayer, ...]:
        return tuple(OciLayoutLayer(self.files, d, diff_id)
                     for d, diff_id in zip(self.manifest.layers, self.config.diff_ids, strict=True))


@dataclass
class OciLayoutIndex:
    """The image index `desc` names, read and checked when made."""

    files: ArchiveFiles
    desc: Descriptor
    index_bytes: bytes = field(init=False, repr=False)
    manifests: tuple[tuple[Descriptor, Platform | None], ...] = field(init=False)

    def __post_init__(self) -> None:
        self.index_bytes = read_bytes(self.files, blob_name(self.desc), self.desc)
        try:
            doc = json.loads(self.index_bytes)
        except ValueError as exc:
            raise ArchiveError(f"image index {self.desc.digest} is not valid JSON: {exc}") from None
        items = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise ArchiveError(f"image index {self.desc.digest} must be an object with a list of manifests")
        self.manifests = tuple((Descriptor.from_dict(item, f"image index {self.desc.digest} manifests[{j}]"),
                                Platform.of_entry(item)) for j, item in enumerate(items))

    @property
    def media_type(self) -> str:
        return self.desc.media_type

    @property
    def digest(self) -> str:
        return self.desc.digest

    def image(self, digest: str) -> OciLayoutImage:
        for desc, _ in self.manifests:
            if desc.digest == digest:
                return OciLayoutImage(self.files, desc)
        raise ArchiveError(f"image index {self.desc.digest} has no manifest {digest}")


@dataclass(frozen=True)
class LayoutEntry:
    """One entry of index.json: an image or an image index, the tags its annotations give, and where."""

    entry: OciLayoutImage | OciLayoutIndex
    tags: tuple[str, ...]
    where: str


def read_oci_layout(files: ArchiveFiles) -> Iterator[LayoutEntry]:
    """The entries of the layout's index.json, one at a time (each is checked when it is reached)."""
    index = read_json(files, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise ArchiveError("index.json must be an object with a list of manifests")
    for i, item in enumerate(manifests):
        where = f"index.json manifests[{i}]"
        desc = Descriptor.from_dict(item, where)
        annotations = dict(desc.annotations)
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME)
        tags = archive_tags([name], where) if name and (":" in name or "/" in name) else ()
        if desc.media_type in INDEX_TYPES:
            yield LayoutEntry(OciLayoutIndex(files, desc), tags, where)
        elif desc.media_type in MANIFEST_TYPES:
            yield LayoutEntry(OciLayoutImage(files, desc), tags, where)
        else:
            raise ArchiveError(f"{where} has media type {desc.media_type!r}, not an image manifest's")


def layout_index_json(desc: Descriptor, tags: Sequence[str]) -> bytes:
    """The `index.json` of an OCI layout that holds `desc` under the tags' tag parts."""
    return _index_json(desc, tags)


def _index_json(desc: Descriptor, tags: Sequence[str]) -> bytes:
    names = [split_tag(t)[1] for t in tags] or [""]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{**desc.to_dict(), **({"annotations": {REF_NAME: name}} if name else {})} for name in names],
    }
    return json.dumps(index, sort_keys=True, separators=(",", ":")).encode()


def index_bytes_of(images: Sequence[tuple[Image, Platform]]) -> bytes:
    """The canonical OCI image index of `images`, each with its platform."""
    doc = {"schemaVersion": 2, "mediaType": MEDIA_INDEX,
           "manifests": [{"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest_bytes),
                          "platform": platform.to_dict()} for image, platform in images]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class OciLayoutWriter:
    """Images into an OCI image layout at `dest`: a tar (`directory=False`) or a directory that must
    not exist yet. Tags become `org.opencontainers.image.ref.name` annotations (their tag part)."""

    def __init__(self, dest: str | os.PathLike[str], *, directory: bool = False) -> None:
        self.dest = dest
        self.directory = directory

    def _out(self) -> contextlib.AbstractContextManager[Any]:
        return writing_dir(self.dest) if self.directory else writing_tar(self.dest)

    def write(self, image: Image, tags: Sequence[str] = ()) -> str:
        manifest = image.manifest_bytes
        desc = Descriptor(image.media_type, sha256(manifest), len(manifest))
        with self._out() as out:
            out.add_dir("blobs")
            out.add_dir("blobs/sha256")
            out.add_bytes(blob_name(desc), manifest)
            self._blobs(out, [image], written={desc.digest})
            out.add_bytes("index.json", _index_json(desc, tags))
            out.add_bytes("oci-layout", LAYOUT)
        return desc.digest

    def write_index(self, index: ImageIndex, tags: Sequence[str] = ()) -> str:
        """A multi-platform image: every image of `index`, then the index itself, named in index.json."""
        raw = index.index_bytes
        desc = Descriptor(index.media_type, sha256(raw), len(raw))
        images = [index.image(d.digest) for d, _ in index.manifests]
        with self._out() as out:
            out.add_dir("blobs")
            out.add_dir("blobs/sha256")
            written = {desc.digest}
            out.add_bytes(blob_name(desc), raw)
            for image in images:
                if image.digest not in written:
                    out.add_bytes(blob_name(Descriptor(image.media_type, image.digest, 0)), image.manifest_bytes)
                    written.add(image.digest)
            self._blobs(out, images, written)
            out.add_bytes("index.json", _index_json(desc, tags))
            out.add_bytes("oci-layout", LAYOUT)
        return desc.digest

    @staticmethod
    def _blobs(out: Any, images: Sequence[Image], written: set[str]) -> None:
        """Configs and layers in digest order, each once."""
        blobs: dict[str, Any] = {}
        for image in images:
            blobs.setdefault(image.config_descriptor.digest, image.config_bytes)
            for layer in image.layers:
                blobs.setdefault(layer.digest, layer)
        for digest in sorted(blobs):
            if digest in written:
                continue
            written.add(digest)
            name = "blobs/sha256/" + digest.split(":", 1)[1]
            blob = blobs[digest]
            if isinstance(blob, bytes):
                out.add_bytes(name, blob)
            else:
                with blob.compressed() as src:
                    out.add_stream(name, blob.size, src)
