"""Images and layers as one small protocol, implemented by the store, the archive formats and a registry.

In the spirit of go-containerregistry's `v1.Layer`/`v1.Image`: a **Layer** is a blob (digest, size,
media type) holding a tar (diff_id, and its size when known), readable either way; an **Image** is
its manifest (bytes, media type, digest), its config (bytes and parsed) and its layers, base first;
an **ImageIndex** lists the manifests of a multi-platform image. An **ImageSink** receives an image.
`save`, `load` and `build --output type=oci|docker` are each one `copy_image` between two of them.

Contracts every implementation meets (`tests/image/kit.py` checks them on each one):
- `Layer.compressed()` and `Layer.uncompressed()` are context managers yielding a reader the block
  consumes. Reading to the end checks what was read: the blob's size and digest, and for the
  uncompressed stream its diff_id (an implementation whose stored bytes were checked against the
  diff_id when they were admitted, the store, checks the blob's digest, which pins the same bytes).
  When the block ends early, the rest is read so that the check still happens. A mismatch raises
  `DigestMismatchError` (bad input from outside) or `CorruptBlobError` (damage inside the store);
  a block that ended normally has read intact data. `compressed(verify=False)` hands out the bytes
  unchecked, for a consumer that checks digest and size itself (the store's door, `receive_layer`).
- `Image.manifest_bytes` hash to `Image.digest`; `Image.config_bytes` to `manifest.config.digest`;
  `len(layers) == len(config.diff_ids)`, and layer i has diff_id `config.diff_ids[i]`.
- `ImageSink.write(image, tags)` stores the layer blobs and the config first, then the manifest,
  then points the tags at it, and returns the digest of the manifest it wrote (a sink may convert
  layers, so it can differ from the image's). Atomic: when it fails, nothing partial is left at the
  destination (a file or directory appears whole under its name or not at all; a store keeps only
  unreferenced blobs, which `prune` removes) and no tag has moved.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, runtime_checkable

from layerbuild.errors import DigestMismatchError, LayerbuildError
from layerbuild.image.config import ImageConfig
from layerbuild.image.manifest import Descriptor, Manifest
from layerbuild.layer.compression import sniff_compression

_CHUNK = 1 << 20
DAMAGED = "the archive is damaged, truncated or was edited"


@runtime_checkable
class Layer(Protocol):
    """One layer: a blob (digest, size, media type) that holds a tar (diff_id, diff_size)."""

    @property
    def digest(self) -> str: ...
    @property
    def diff_id(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def media_type(self) -> str: ...
    @property
    def diff_size(self) -> int | None:
        """Bytes of the uncompressed tar, or None when only reading it tells."""
        ...

    def compressed(self, *, verify: bool = True) -> contextlib.AbstractContextManager[BinaryIO]: ...

    def uncompressed(self) -> contextlib.AbstractContextManager[BinaryIO]: ...


@runtime_checkable
class Image(Protocol):
    """One image for one platform: manifest, config and layers."""

    @property
    def manifest_bytes(self) -> bytes: ...
    @property
    def media_type(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def manifest(self) -> Manifest: ...
    @property
    def config_descriptor(self) -> Descriptor:
        """`manifest.config`, known without looking at the layers."""
        ...
    @property
    def config_bytes(self) -> bytes: ...
    @property
    def config(self) -> ImageConfig: ...
    @property
    def layers(self) -> tuple[Layer, ...]: ...


@dataclass(frozen=True)
class Platform:
    """An image's platform: os, architecture and variant."""

    os: str
    architecture: str
    variant: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @staticmethod
    def of_entry(item: Any) -> Platform | None:
        """The `platform` of an index's manifest entry, or None where it has none of the right shape."""
        p = item.get("platform") if isinstance(item, dict) else None
        if not isinstance(p, dict) or not isinstance(p.get("os"), str) or not isinstance(p.get("architecture"), str):
            return None
        variant = p.get("variant")
        return Platform(p["os"], p["architecture"], variant if isinstance(variant, str) else "")


@runtime_checkable
class ImageIndex(Protocol):
    """A multi-platform image: an index (or Docker manifest list) of image manifests."""

    @property
    def index_bytes(self) -> bytes: ...
    @property
    def media_type(self) -> str: ...
    @property
    def digest(self) -> str: ...
    @property
    def manifests(self) -> tuple[tuple[Descriptor, Platform | None], ...]: ...

    def image(self, digest: str) -> Image:
        """The image whose manifest is `digest`, one of `manifests`."""
        ...


class ImageSink(Protocol):
    """Where images go: the store, an archive, a registry (see the module docstring for the contract)."""

    def write(self, image: Image, tags: Sequence[str] = ()) -> str: ...


def copy_image(src: Image, dst: ImageSink, tags: Sequence[str] = ()) -> str:
    """Copy `src` into `dst` and point `tags` at it there; the manifest digest written."""
    return dst.write(src, tags)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_bytes(data: bytes, desc: Descriptor, what: str) -> bytes:
    """`data` if it has the size and digest `desc` declares, else DigestMismatchError naming `what`."""
    if len(data) != desc.size:
        raise DigestMismatchError(f"{what} has {len(data)} bytes, not the {desc.size} its descriptor declares",
                                  hint=DAMAGED)
    digest = sha256(data)
    if digest != desc.digest:
        raise DigestMismatchError(f"{what} hashes to {digest}, not to {desc.digest}", hint=DAMAGED)
    return data


class VerifyingReader(io.RawIOBase):
    """`raw` passed through a sha256 and a byte count; at its end (or past `size`) the bytes must be
    `size` long and hash to `digest`, else DigestMismatchError naming `what`. `size` None: any length."""

    def __init__(self, raw: BinaryIO, digest: str, size: int | None, what: str, *, hint: str = DAMAGED) -> None:
        super().__init__()
        self._raw, self._digest, self._size, self._what, self._hint = raw, digest, size, what, hint
        self._hash = hashlib.sha256()
        self._seen = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._size is not None:  # never read more than one byte past the promise
            view = view[: max(1, min(len(view), self._size - self._seen + 1))]
        data = self._raw.read(len(view))
        n = len(data)
        view[:n] = data
        self._seen += n
        if self._size is not None and self._seen > self._size:
            raise DigestMismatchError(f"{self._what} is larger than its declared {self._size} bytes", hint=self._hint)
        if n:
            self._hash.update(view[:n])
        elif not self._checked:
            self._checked = True
            if self._size is not None and self._seen != self._size:
                raise DigestMismatchError(f"{self._what} has {self._seen} bytes, not the {self._size} it declares",
                                          hint=self._hint)
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise DigestMismatchError(f"{self._what} hashes to {actual}, not to {self._digest}", hint=self._hint)
        return n


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a layer's bytes may raise: a zstd error only once zstandard is in use."""
    zstd = sys.modules.get("zstandard")
    return (OSError, ValueError, EOFError, zstd.ZstdError) if zstd else (OSError, ValueError, EOFError)


def drain(reader: BinaryIO) -> None:
    """Read what is left, so that a verifying reader reaches its end and checks what it read."""
    while reader.read(_CHUNK):
        pass


@contextlib.contextmanager
def verified(raw: BinaryIO, digest: str, size: int | None, what: str) -> Iterator[BinaryIO]:
    """A VerifyingReader over `raw` as a block: the rest is read when it ends, so the check happens.
    When the consumer fails, a mismatch of what it was reading takes the place of its error."""
    reader = io.BufferedReader(VerifyingReader(raw, digest, size, what), _CHUNK)
    try:
        yield reader
    except DigestMismatchError:
        raise
    except Exception:
        with contextlib.suppress(*_read_errors()):
            drain(reader)  # raises DigestMismatchError when the bytes were bad
        raise
    drain(reader)


def decompressed(blob: BinaryIO) -> BinaryIO:
    """A reader of the tar inside a layer blob (zstd, gzip or plain), told by its magic bytes; `blob`
    is read through to its end by the decompressor, so a verifying reader under it gets checked."""
    head = peek(blob, 4)
    fmt = sniff_compression(head)
    if fmt == "zstd":
        # closefd=False: the blob stays open to be read to its end, where its digest is checked.
        import zstandard  # only for zstd layers: its import (and platform's) costs every command

        return zstandard.ZstdDecompressor().stream_reader(
            blob, read_across_frames=True, closefd=False)
    if fmt == "gzip":
        return gzip.GzipFile(fileobj=blob, mode="rb")  # type: ignore[return-value]
    if fmt != "tar":
        raise LayerbuildError(f"a layer blob is {fmt}-compressed, which no image format uses",
                              hint="layers are plain, gzip or zstd tars")
    return blob


def peek(blob: BinaryIO, n: int) -> bytes:
    """The first `n` bytes, left unread (a verifying reader hashes as it goes and cannot seek back)."""
    peek_ = getattr(blob, "peek", None)
    if peek_ is not None:
        return bytes(peek_(n)[:n])
    head = blob.read(n)
    blob.seek(0)
    return head


class _DiffIdReader(io.RawIOBase):
    """The uncompressed tar of a verifying blob reader, hashed: at its end it must hash to `diff_id`."""

    def __init__(self, tar: BinaryIO, diff_id: str, what: str) -> None:
        super().__init__()
        self._tar, self._diff_id, self._what = tar, diff_id, what
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._tar.read(len(view))
        n = len(data)
        view[:n] = data
        if n:
            self._hash.update(data)
        elif not self._checked:
            self._checked = True
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._diff_id:
                raise DigestMismatchError(f"{self._what} unpacks to {actual}, not to the {self._diff_id} its "
                                          "config names", hint=DAMAGED)
        return n


@contextlib.contextmanager
def uncompressed_of(blob: contextlib.AbstractContextManager[BinaryIO], diff_id: str,
                    what: str) -> Iterator[BinaryIO]:
    """The tar inside the verifying blob reader `blob`, checked against `diff_id` at its end; used by
    the layers of archives (and any other source from outside)."""
    with blob as raw:
        tar = io.BufferedReader(_DiffIdReader(decompressed(raw), diff_id, what), _CHUNK)
        try:
            yield tar
        except DigestMismatchError:
            raise
        except Exception:
            with contextlib.suppress(*_read_errors()):
                drain(tar)
            raise
        drain(tar)
        drain(raw)


class DescribedLayer:
    """What a layer from outside (an archive, a registry) knows from its manifest: `desc` (the blob's
    descriptor) and `diff_id` (from the config), with `compressed()` left to the source. Its
    uncompressed reader checks the diff_id; the tar's size is known only by reading it."""

    desc: Descriptor
    diff_id: str

    @property
    def digest(self) -> str:
        return self.desc.digest

    @property
    def size(self) -> int:
        return self.desc.size

    @property
    def media_type(self) -> str:
        return self.desc.media_type

    @property
    def diff_size(self) -> int | None:
        return None

    @property
    def what(self) -> str:
        """How messages name the layer."""
        return f"layer {self.desc.digest}"

    def compressed(self, *, verify: bool = True) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def uncompressed(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return uncompressed_of(self.compressed(), self.diff_id, self.what)
