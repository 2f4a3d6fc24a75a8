"""`push`: an image of the store into a registry, as one `copy_image` from the store to a RegistrySink.

The store keeps zstd layers; a push sends their gzip variants by default (made once and kept in the
store) with Docker's media types, what every registry and runtime reads; `fmt="oci"` gives OCI types
and `compression="zstd"` the stored zstd blobs (OCI types only). The diff_ids, and so the image id,
are the same either way. What the push learned is recorded in the store: the repository's manifest
digest for the image (`images --digests`) and the repositories its blobs are in (mount sources for
later pushes to the same registry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from layerbuild.errors import UsageError
from layerbuild.image.protocol import copy_image
from layerbuild.image.store_io import StoredImage, resolve_image
from layerbuild.image.storeimage import store_image
from layerbuild.reference import Reference, parse_reference
from layerbuild.registry.client import RegistryClient
from layerbuild.registry.sink import DEFAULT_JOBS, FORMATS, BlobEvent, RegistrySink
from layerbuild.store import Store

COMPRESSIONS = ("gzip", "zstd")


@dataclass(frozen=True)
class PushEvent:
    """One line of a push's progress, in the words and JSON of docker's push stream: `status` (`The
    push refers to repository [...]`, `Preparing`, `Waiting`, `Pushing`, `Pushed`, `Layer already
    exists`, `Mounted from REPO`, or the closing `TAG: digest: … size: N`), `id` (a layer's short
    diff_id), `current`/`total` bytes while pushing; the last event carries `aux` (Tag, Digest, Size)."""

    status: str
    id: str = ""
    current: int | None = None
    total: int | None = None
    aux: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.id:
            out["id"] = self.id
            detail = {} if self.current is None else {"current": self.current, "total": self.total}
            out["progressDetail"] = detail
        if self.aux is not None:
            out["aux"] = self.aux
        return out

    @property
    def final(self) -> bool:
        """A layer's last word (what plain output prints), or a line of the push itself."""
        return self.status not in ("Preparing", "Waiting", "Pushing")


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str
    size: int
    media_type: str
    layers: dict[str, str] = field(default_factory=dict)  # blob digest → pushed / exists / mounted


def short_id(digest: str) -> str:
    return digest.partition(":")[2][:12]


def find_local(store: Store, name: str) -> StoredImage:
    """The store's image for `name` as given (`app:1`), else as its normalised remote name
    (`docker.io/library/app:1`) or docker's familiar form of it."""
    from layerbuild.image.store_io import ImageNotFoundError

    try:
        return resolve_image(store, name)
    except ImageNotFoundError as first:
        ref = parse_reference(name)
        for alias in (str(ref), ref.familiar()):
            if alias != name:
                try:
                    return resolve_image(store, alias)
                except ImageNotFoundError:
                    pass
        raise UsageError(f"An image does not exist locally with the tag: {name}",
                         hint=first.hint or "`layerbuild images` lists the images in the store") from None


def check_options(fmt: str | None, compression: str) -> str:
    """The manifest format to write: `fmt`, or by default docker (oci for zstd, which docker lacks)."""
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown --compression {compression!r}", hint="use gzip or zstd")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}", hint="use docker or oci")
    if compression == "zstd":
        if fmt == "docker":
            raise UsageError("Docker's manifest format has no zstd layers",
                             hint="push zstd layers with --format oci, or gzip ones with --format docker")
        return "oci"
    return fmt or "docker"


def push(store: Store, name: str, *, client: RegistryClient | None = None, image: StoredImage | str | None = None,
         fmt: str | None = None, compression: str = "gzip", jobs: int = DEFAULT_JOBS,
         on_event: Callable[[PushEvent], None] | None = None) -> PushResult:
    """Push the store's image `name` (`host/repo[:tag]`) to its registry, under its tag; `image` pushes
    another image of the store under that name (a build's result, by its StoredImage or reference)."""
    fmt = check_options(fmt, compression)
    ref = parse_reference(name)
    if ref.digest is not None:
        raise UsageError(f"cannot push to a digest reference: {name}", hint="push NAME[:TAG]")
    stored = find_local(store, name) if image is None else (
        resolve_image(store, image) if isinstance(image, str) else image)
    tell = on_event or (lambda event: None)
    tell(PushEvent(f"The push refers to repository [{ref.name}]"))
    src = store_image(store, stored, compression="gzip" if compression == "gzip" else "stored")
    own = client is None
    active = client or RegistryClient()
    try:
        sink = RegistrySink(active, ref, fmt=fmt, jobs=jobs, on_event=_blob_events(tell),
                            mount_sources=lambda digest: _mount_sources(store, ref, digest))
        for layer in reversed(src.layers):  # docker lists the top layer first
            tell(PushEvent("Preparing", short_id(layer.diff_id)))
        digest = copy_image(src, sink, [ref.tag or "latest"])
    finally:
        if own:
            active.close()
    blobs = [layer.digest for layer in src.layers] + [src.config_descriptor.digest]
    store.index.note_blob_repos(ref.name, blobs)
    store.index.set_repo_digest(ref.name, digest, stored.manifest_digest)
    tag = ref.tag or "latest"
    tell(PushEvent(f"{tag}: digest: {digest} size: {sink.manifest_size}",
                   aux={"Tag": tag, "Digest": digest, "Size": sink.manifest_size}))
    return PushResult(ref, digest, sink.manifest_size, sink.media_type, dict(sink.results))


def push_all(store: Store, names: Sequence[str], image: StoredImage, **options: Any) -> list[PushResult]:
    """`image` pushed under each of `names` (a build's `-t` names), with one client."""
    own = options.pop("client", None)
    client = own or RegistryClient()
    try:
        return [push(store, n, client=client, image=image, **options) for n in names]
    finally:
        if own is None:
            client.close()


def _mount_sources(store: Store, ref: Reference, digest: str) -> list[str]:
    """Other repositories of `ref`'s registry the store has seen blob `digest` in (paths)."""
    prefix = ref.domain + "/"
    return [r[len(prefix):] for r in store.index.blob_repos(digest) if r.startswith(prefix) and r != ref.name]


def _blob_events(tell: Callable[[PushEvent], None]) -> Callable[[BlobEvent], None]:
    def translate(event: BlobEvent) -> None:
        if not event.layer:
            return  # docker shows the layers only
        ident = short_id(event.diff_id or event.digest)
        if event.status == "waiting":
            tell(PushEvent("Waiting", ident))
        elif event.status == "pushing":
            tell(PushEvent("Pushing", ident, event.sent, event.size))
        elif event.status == "exists":
            tell(PushEvent("Layer already exists", ident))
        elif event.status == "mounted":
            tell(PushEvent(f"Mounted from {event.source}", ident))
        else:
            tell(PushEvent("Pushed", ident))
    return translate
