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

import hashlib
import json
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, cast

from layerbuild.digest import is_sha256_digest
from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.image.config import ImageConfig
from layerbuild.image.manifest import INDEX_TYPES, MANIFEST_TYPES, Descriptor, Manifest
from layerbuild.image.receive import CONFIG_TYPES, check_blob, receive_layer
from layerbuild.image.store_io import StoredImage, write_image
from layerbuild.layer.compression import SNIFF_BYTES, sniff_compression
from layerbuild.layer.ingest import ingest_layer
from layerbuild.platforms import host_arch
from layerbuild.reference import familiar, normalize_tag
from layerbuild.store import LayerRecord, Store

MAX_JSON = 16 << 20
_DAMAGED = "the archive is damaged, truncated or was edited"
_MAX_LINKS = 8
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TAR_MODES: dict[str, Literal["r:", "r:gz", "r:bz2", "r:xz"]] = {"tar": "r:", "gzip": "r:gz", "bzip2": "r:bz2",
                                                                  "xz": "r:xz"}


class ArchiveError(LayerbuildError):
    """An image archive that cannot be loaded: damaged, truncated, or not of the shape its format has."""

    def __init__(self, message: str, *, hint: str | None = _DAMAGED) -> None:
        super().__init__(message, hint=hint)


@dataclass(frozen=True)
class Loaded:
    image: StoredImage
    tags: tuple[str, ...]


def _member(tar: tarfile.TarFile, name: str) -> tuple[tarfile.TarInfo, BinaryIO]:
    """The regular file `name` of the archive. A link to another member is followed (`docker save`
    links a layer that two images share), inside the archive only and a few times at most."""
    shown = name
    for _ in range(_MAX_LINKS):
        try:
            member = tar.getmember(name)
        except KeyError:
            raise ArchiveError(f"the archive has no {name!r}" + (f" (linked from {shown!r})" if name != shown else ""),
                               hint="is it a docker save or OCI archive, and whole?") from None
        if member.isfile():
            data = tar.extractfile(member)
            assert data is not None
            return member, cast(BinaryIO, data)
        if not (member.issym() or member.islnk()):
            break
        target = posixpath.join(posixpath.dirname(name), member.linkname) if member.issym() else member.linkname
        name = posixpath.normpath(target)
        if name.startswith(("/", "../")) or name == "..":
            raise ArchiveError(f"{shown!r} in the archive links to {member.linkname!r}, outside the archive")
    raise ArchiveError(f"{shown!r} in the archive is not a regular file")


def _bytes(tar: tarfile.TarFile, name: str, desc: Descriptor | None = None) -> bytes:
    """The member `name`, at most MAX_JSON bytes; when `desc` is given, checked against its size and digest."""
    member, src = _member(tar, name)
    if member.size > MAX_JSON:
        raise ArchiveError(f"{name!r} in the archive is too large for a JSON document ({member.size} bytes)")
    data = src.read()
    if len(data) != member.size:
        raise ArchiveError(f"{name!r} in the archive is truncated")
    return data if desc is None else check_blob(data, desc, repr(name))


def _json(tar: tarfile.TarFile, name: str) -> Any:
    try:
        return json.loads(_bytes(tar, name))
    except ValueError as exc:
        raise ArchiveError(f"{name!r} in the archive is not valid JSON: {exc}") from None


def _config(raw: bytes, name: str, layer_count: int) -> ImageConfig:
    config = ImageConfig.from_json(raw)
    if len(config.diff_ids) != layer_count:
        raise ArchiveError(f"{name!r} names {len(config.diff_ids)} layers but the archive has {layer_count}")
    return config


def _tags(names: list[str], where: str) -> tuple[str, ...]:
    tags = []
    for name in names:
        try:
            tags.append(normalize_tag(familiar(name)))
        except UsageError:
            raise ArchiveError(f"{where} has an invalid image name {name!r}") from None
    return tuple(dict.fromkeys(tags))


def _store(store: Store, config: ImageConfig, raw: bytes, tags: tuple[str, ...],
           layers: Iterator[LayerRecord]) -> Loaded:
    with store.lease() as lease:
        records = []
        for layer in layers:
            lease.add(layer.digest, layer.diff_id)
            records.append(layer)
        return Loaded(write_image(store, config, tags, layers=records, raw_config=raw, lease=lease), tags)


def _docker(store: Store, tar: tarfile.TarFile) -> list[Loaded]:
    manifest = _json(tar, "manifest.json")
    if not isinstance(manifest, list) or not all(isinstance(e, dict) for e in manifest):
        raise ArchiveError("manifest.json must be a list of objects, one per image")
    out = []
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
        tags = _tags(repo_tags, where)
        raw = _bytes(tar, config_name)
        named = os.path.basename(config_name).removesuffix(".json")
        if _HEX64.fullmatch(named) and hashlib.sha256(raw).hexdigest() != named:  # docker names it by digest
            raise ArchiveError(f"{config_name!r} hashes to sha256:{hashlib.sha256(raw).hexdigest()}, not to its name")
        config = _config(raw, config_name, len(layer_names))
        layers = (ingest_layer(store, _member(tar, name)[1], what=f"layer {name!r}", expected_diff_id=diff_id)
                  for name, diff_id in zip(layer_names, config.diff_ids, strict=True))
        out.append(_store(store, config, raw, tags, layers))
    return out


def _blob_name(desc: Descriptor) -> str:
    if not is_sha256_digest(desc.digest):
        raise ArchiveError(f"unsupported digest {desc.digest!r} in the archive")
    return "blobs/sha256/" + desc.digest.split(":", 1)[1]


def _layer(store: Store, tar: tarfile.TarFile, desc: Descriptor, diff_id: str) -> LayerRecord:
    name = _blob_name(desc)
    member, src = _member(tar, name)
    if member.size != desc.size:  # before reading a byte of it
        raise ArchiveError(f"{name!r} has {member.size} bytes, not the {desc.size} its descriptor declares")
    return receive_layer(store, src, desc, diff_id)


def _platform_manifest(tar: tarfile.TarFile, desc: Descriptor, where: str) -> Descriptor:
    """The manifest of this machine's platform in the image index `desc` (BuildKit's exporter nests one
    in index.json when it adds attestations); attestation manifests are skipped."""
    doc = _bytes(tar, _blob_name(desc), desc)
    try:
        index = json.loads(doc)
    except ValueError as exc:
        raise ArchiveError(f"image index {desc.digest} is not valid JSON: {exc}") from None
    items = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(items, list):
        raise ArchiveError(f"image index {desc.digest} must be an object with a list of manifests")
    arch, found = host_arch(), []
    for j, item in enumerate(items):
        child = Descriptor.from_dict(item, f"{where} manifests[{j}]")
        platform = item.get("platform")
        if child.media_type in MANIFEST_TYPES and isinstance(platform, dict) \
                and (platform.get("os"), platform.get("architecture")) == ("linux", arch):
            found.append(child)
    if len(found) != 1:
        raise ArchiveError(f"{where} is an image index with {len(found) or 'no'} manifests for linux/{arch}",
                           hint="save a single-platform image (e.g. docker buildx --platform, skopeo "
                                "--override-arch)")
    return found[0]


def _oci(store: Store, tar: tarfile.TarFile) -> list[Loaded]:
    index = _json(tar, "index.json")
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise ArchiveError("index.json must be an object with a list of manifests")
    out = []
    for i, item in enumerate(manifests):
        where = f"index.json manifests[{i}]"
        desc = Descriptor.from_dict(item, where)
        annotations = dict(desc.annotations)
        name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
        tags = _tags([name], where) if name and (":" in name or "/" in name) else ()
        if desc.media_type in INDEX_TYPES:
            desc = _platform_manifest(tar, desc, where)
        if desc.media_type not in MANIFEST_TYPES:
            raise ArchiveError(f"{where} has media type {desc.media_type!r}, not an image manifest's")
        manifest = Manifest.from_json(_bytes(tar, _blob_name(desc), desc))
        if manifest.config.media_type not in CONFIG_TYPES:
            raise ArchiveError(f"manifest {desc.digest} has a config of media type {manifest.config.media_type!r}")
        raw = _bytes(tar, _blob_name(manifest.config), manifest.config)
        config = _config(raw, _blob_name(manifest.config), len(manifest.layers))
        layers = (_layer(store, tar, layer, diff_id)
                  for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True))
        out.append(_store(store, config, raw, tags, layers))
    return out


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
    """Store the images of the archive at `path`; returns them with the tags they got."""
    shown = os.fspath(path)
    if os.path.isdir(shown):
        raise UsageError(f"{shown!r} is a directory, not an image archive", hint="give the file docker save wrote")
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
        if "manifest.json" in names:
            return _docker(store, tar)
        if "index.json" in names:
            return _oci(store, tar)
    raise UsageError(f"{shown!r} is neither a docker save nor an OCI image archive")

