"""A registry's images as the image protocol (read side): manifests and indexes by tag or digest,
layers streamed and verified from the registry, and the platform an index offers for a machine.

`remote(client, ref)` costs one manifest request and gives a `RegistryImage` (Docker schema 2 or OCI
manifest) or a `RegistryIndex` (Docker manifest list or OCI index); `RegistryIndex.select(platform)`
picks a manifest as containerd's platform matcher does. A `RegistryImage` holds its manifest bytes
(checked against the pinned digest, else the registry's Docker-Content-Digest) and fetches its config
when first asked (checked against the manifest's descriptor); its layers read blobs through
`RegistryClient.open_blob`, which checks size and digest as they stream. Layers arrive in the store
through `image.StoreSink` (the store's door), which checks their diff_ids against the config.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, ClassVar

from layerbuild.errors import RegistryError
from layerbuild.image.config import ImageConfig, ImageFormatError
from layerbuild.image.manifest import INDEX_TYPES, MANIFEST_TYPES, Descriptor, Manifest
from layerbuild.image.protocol import DescribedLayer, Platform, check_bytes
from layerbuild.platforms import PlatformSpec, best_platform, format_platform, normalize_platform
from layerbuild.reference import Reference
from layerbuild.registry.client import Manifest as Fetched
from layerbuild.registry.client import RegistryClient

_CHUNK = 1 << 20


class _ChunkReader(io.RawIOBase):
    """A binary reader over an iterator of byte chunks (a blob as `open_blob` streams it): `read`
    hands out whole chunks (fewer bytes than asked for is a raw reader's right) and `readinto` copies
    them straight into the reader's buffer, so a chunk is copied at most once on its way."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._chunk = b""
        self._off = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> int:
        """Bytes left of the current chunk, after taking the next one if it is used up (0: the end)."""
        while self._off == len(self._chunk) and not self._done:
            try:
                self._chunk, self._off = next(self._chunks), 0
            except StopIteration:
                self._done = True
        return len(self._chunk) - self._off

    def read(self, n: int | None = -1) -> bytes:
        left = self._fill()
        if not left:
            return b""
        take = left if n is None or n < 0 else min(n, left)
        chunk, off = self._chunk, self._off
        self._off += take
        if off == 0 and take == len(chunk):
            return chunk
        return chunk[off : off + take]

    def readinto(self, buffer: Any) -> int:
        left = self._fill()
        if not left:
            return 0
        view = memoryview(buffer).cast("B")
        n = min(len(view), left)
        view[:n] = memoryview(self._chunk)[self._off : self._off + n]
        self._off += n
        return n


@dataclass(frozen=True)
class RegistryLayer(DescribedLayer):
    """One layer blob of a repository; every read streams it from the registry, checked."""

    # Its verifying compressed reader raises DigestMismatchError at its end if the bytes do not match
    # the digest, so a sink need not hash them again (StoreSink reads it to that end before it records
    # anything); a sink that hashes them anyway (one keeping the blob) reads with verify=False.
    checks_digest: ClassVar[bool] = True

    client: RegistryClient
    repo: Reference
    desc: Descriptor
    diff_id: str

    @property
    def what(self) -> str:
        return f"layer {self.desc.digest} of {self.repo.name}"

    @contextlib.contextmanager
    def compressed(self, *, verify: bool = True) -> Iterator[BinaryIO]:
        # `verify=False`: the consumer hashes the bytes itself (open_blob still bounds their size).
        chunks = self.client.open_blob(self.repo, self.desc.digest, size=self.desc.size, check=verify)
        reader = _ChunkReader(chunks)
        try:
            yield reader  # type: ignore[misc]
            if verify:
                while reader.read(_CHUNK):
                    pass
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()


@dataclass
class RegistryImage:
    """The image whose manifest `manifest_bytes` (digest `digest`) came from `repo`."""

    client: RegistryClient
    repo: Reference
    manifest_bytes: bytes
    media_type: str
    digest: str
    manifest: Manifest = field(init=False)
    _config: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.manifest = Manifest.from_json(self.manifest_bytes)
        except ImageFormatError as exc:
            raise RegistryError(f"{self.repo.name}@{self.digest}: {exc.message}") from None

    @property
    def config_descriptor(self) -> Descriptor:
        return self.manifest.config

    @property
    def config_bytes(self) -> bytes:
        if self._config is None:
            desc = self.manifest.config
            data = self.client.get_blob(self.repo, desc.digest, max_size=16 << 20)
            self._config = check_bytes(data, desc, f"the config {desc.digest} of {self.repo.name}")
        return self._config

    @property
    def config(self) -> ImageConfig:
        return ImageConfig.from_json(self.config_bytes)

    @property
    def platform(self) -> PlatformSpec:
        raw = json.loads(self.config_bytes)
        variant = raw.get("variant") if isinstance(raw, dict) else None
        config = self.config
        return normalize_platform(config.os or "", config.architecture or "",
                                  variant if isinstance(variant, str) else "")

    @property
    def layers(self) -> tuple[RegistryLayer, ...]:
        diff_ids = self.config.diff_ids
        if len(diff_ids) != len(self.manifest.layers):
            raise ImageFormatError(f"{self.repo.name}@{self.digest} lists {len(self.manifest.layers)} layer(s) but "
                                   f"its config {len(diff_ids)} diff_id(s)")
        return tuple(RegistryLayer(self.client, self.repo, d, diff_id)
                     for d, diff_id in zip(self.manifest.layers, diff_ids, strict=True))


@dataclass
class RegistryIndex:
    """A multi-platform image (OCI index or Docker manifest list) of `repo`."""

    client: RegistryClient
    repo: Reference
    index_bytes: bytes
    media_type: str
    digest: str
    manifests: tuple[tuple[Descriptor, Platform | None], ...] = field(init=False)

    def __post_init__(self) -> None:
        try:
            doc = json.loads(self.index_bytes)
        except ValueError:
            doc = None
        items = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise RegistryError(f"{self.repo.name}@{self.digest}: the image index has no list of manifests")
        try:
            self.manifests = tuple((Descriptor.from_dict(item, f"manifests[{j}]"), Platform.of_entry(item))
                                   for j, item in enumerate(items))
        except ImageFormatError as exc:
            raise RegistryError(f"{self.repo.name}@{self.digest}: {exc.message}") from None

    def image(self, digest: str) -> RegistryImage:
        for desc, _ in self.manifests:
            if desc.digest == digest:
                got = remote(self.client, self.repo.with_digest(digest))
                if not isinstance(got, RegistryImage):
                    raise RegistryError(f"{self.repo.name}@{digest}, named by the index {self.digest}, is not "
                                        "an image manifest")
                return got
        raise RegistryError(f"the image index {self.digest} of {self.repo.name} has no manifest {digest}")

    def select(self, want: PlatformSpec) -> Descriptor:
        """The image manifest for platform `want` (containerd's matching: arm64 is arm64/v8, arm/v7 takes
        v6 and v5 when there is no v7, amd64 takes 386); RegistryError naming what there is if none."""
        images = [(d, p) for d, p in self.manifests if d.media_type in MANIFEST_TYPES and p is not None]
        specs = [(p.os, p.architecture, p.variant) for _, p in images]
        best = best_platform(want, specs)
        if best is None:
            offered = ", ".join(sorted({format_platform(normalize_platform(*s)) for s in specs})) or "none"
            raise RegistryError(f"{self.repo}: no image for platform {format_platform(want)} in its index "
                                f"(it has {offered})", hint="choose one of those with --platform")
        return images[best][0]


def remote(client: RegistryClient, ref: Reference) -> RegistryImage | RegistryIndex:
    """What `ref` names in its registry, by one manifest request: an image or an image index."""
    return from_manifest(client, ref, client.get_manifest(ref))


def from_manifest(client: RegistryClient, ref: Reference, got: Fetched) -> RegistryImage | RegistryIndex:
    """The image or index of `ref` whose manifest (or index) `got` is, as the registry sent it."""
    repo = ref.repository()
    if got.media_type in INDEX_TYPES:
        return RegistryIndex(client, repo, got.data, got.media_type, got.digest)
    if got.media_type in MANIFEST_TYPES:
        return RegistryImage(client, repo, got.data, got.media_type, got.digest)
    raise RegistryError(f"{ref}: the registry sent a manifest of type {got.media_type!r}, which layerbuild "
                        "cannot pull", hint="Docker schema 2 and OCI manifests and indexes are supported")
