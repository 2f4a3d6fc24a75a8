"""Pull: one `copy_image` from a registry's image into the store, with docker's outcomes and events.

The manifest (or index) is fetched once; when the store already holds what that digest was pulled as
(its record in the index's repo digests, for the same platform), the pull ends there: "up to date",
one request. Otherwise the platform's manifest and the config are fetched, and the layers whose
diff_id the store lacks are streamed, three at a time, through the store's door (`StoreSink`),
each read again once if its bytes did not match. Blobs are kept as the registry sent them (checked
against their digest and their config's diff_id, not recompressed), so a pulled image pushed again
has the same layer digests, as with containerd and skopeo. The tag moves only when everything is stored;
the repo digest is recorded for `images --digests` and `NAME@sha256:…`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from layerbuild.errors import RegistryError
from layerbuild.platforms import PlatformSpec, format_platform, host_platform
from layerbuild.reference import Reference
from layerbuild.registry.client import INDEX_TYPES, RegistryClient

if TYPE_CHECKING:
    from layerbuild.image.protocol import Layer
    from layerbuild.registry.images import RegistryImage, RegistryIndex
    from layerbuild.store import Store

LAYERS_IN_FLIGHT = 3  # as docker's max-concurrent-downloads


@dataclass(frozen=True)
class PullEvent:
    """One thing a pull did: `type` is `resolved` (the digest the registry named), `layer` (a layer's
    `status`: exists, waiting, reading, retrying, done; `current`/`total` bytes) or `finished`."""

    type: str
    layer: str = ""
    status: str = ""
    current: int = 0
    total: int = 0
    digest: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"event": f"pull.{self.type}"}
        for key in ("layer", "status", "digest"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.type == "layer":
            out.update(current=self.current, total=self.total)
        return out


@dataclass(frozen=True)
class PullResult:
    """What a pull gave: the reference, the registry's digest (of the index or manifest named), the
    store's manifest of the image and whether anything new came (`updated`; False: it was up to date)."""

    ref: Reference
    digest: str
    manifest: str
    updated: bool
    platform: str


def short_id(digest: str) -> str:
    return digest.partition(":")[2][:12]


def pull(store: Store, ref: Reference, *, client: RegistryClient, platform: PlatformSpec | None = None,
         on_event: Callable[[PullEvent], None] | None = None, jobs: int = LAYERS_IN_FLIGHT,
         strict_platform: bool = True) -> PullResult:
    """Pull `ref` (a tag, or a digest it is pinned to) into `store` for `platform` (default: this
    machine's), tagging it as `ref` names it unless it is pinned; see the module docstring.

    `strict_platform`: a single-platform image of another platform is refused (else taken)."""
    want = platform or host_platform()
    emit = on_event or (lambda event: None)
    fetched = client.get_manifest(ref)
    chosen = format_platform(want) if fetched.media_type in INDEX_TYPES else ""
    emit(PullEvent("resolved", digest=fetched.digest))
    tag = None if ref.digest is not None else f"{ref.name}:{ref.tag or 'latest'}"
    held = _up_to_date(store, ref, fetched.digest, chosen, tag)
    if held is not None:  # decided before the image machinery is even imported: a no-op pull is cheap
        emit(PullEvent("finished", digest=fetched.digest, status="up to date"))
        return PullResult(ref, fetched.digest, held, False, chosen)
    from layerbuild.image.protocol import copy_image
    from layerbuild.image.storeimage import StoreSink
    from layerbuild.registry.images import RegistryIndex, from_manifest

    got = from_manifest(client, ref, fetched)
    if isinstance(got, RegistryIndex):
        desc = got.select(want)
        image = got.image(desc.digest)
    else:
        image = got
        if strict_platform and platform is not None and not _matches(image, want):
            raise RegistryError(f"{ref}: the image is for {format_platform(image.platform)}, not for "
                                f"{format_platform(want)}", hint="it has no other platform; pull it without "
                                "--platform, or choose its own")

    def observe(layer: Layer, status: str, current: int) -> None:
        emit(PullEvent("layer", short_id(layer.digest), status, current, layer.size))

    sink = StoreSink(store, reuse=True, jobs=jobs, attempts=2, observe=observe, keep=True)
    manifest = copy_image(image, sink, [tag] if tag else [])
    _record(store, ref, got, image, manifest, chosen)
    if tag is not None:
        _drop_equivalent_tags(store, tag)
    emit(PullEvent("finished", digest=got.digest, status="downloaded"))
    return PullResult(ref, got.digest, manifest, True, chosen)


def _matches(image: RegistryImage, want: PlatformSpec) -> bool:
    from layerbuild.platforms import compatible_platforms

    return image.platform in compatible_platforms(want)


def _up_to_date(store: Store, ref: Reference, digest: str, platform: str, tag: str | None) -> str | None:
    """The store's manifest if `ref@digest` (for `platform`) was pulled before and is still whole (its
    manifest, config and layer blobs are there), with `tag` pointing at it: nothing to do then."""
    manifest = store.index.get_repo_digest(ref.name, digest, platform)
    record = store.index.get_image(manifest) if manifest is not None else None
    if manifest is None or record is None:
        return None
    if tag is not None:
        current = store.index.get_tag(tag)
        if current is None or current.digest != manifest:
            return None
    if not all(store.blobs.stat(blob) is not None for blob in (manifest, *record.refs)):
        return None
    return manifest


def _record(store: Store, ref: Reference, got: RegistryImage | RegistryIndex, image: RegistryImage,
            manifest: str, platform: str) -> None:
    if image.digest != got.digest:  # the platform's own manifest, which NAME@sha256:… may name too
        store.index.set_repo_digest(ref.name, image.digest, manifest, "")
    # Last, so newest: the digest the name had (an index's), which `images --digests` shows, as docker does.
    store.index.set_repo_digest(ref.name, got.digest, manifest, platform)


def _drop_equivalent_tags(store: Store, tag: str) -> None:
    """`docker.io/library/busybox:latest` replaces a `busybox:latest` of a load or an older store: one name."""
    from layerbuild.image.store_io import tag_names

    for name in tag_names(tag):
        if name != tag:
            store.index.delete_tag(name)


def describe(ref: Reference) -> str:
    """`latest: Pulling from library/busybox`, docker's first line (the digest when pinned)."""
    what = ref.digest or ref.tag or "latest"
    path = ref.path if ref.domain == "docker.io" else ref.name
    return f"{what}: Pulling from {path}"


__all__ = ["LAYERS_IN_FLIGHT", "PullEvent", "PullResult", "RegistryError", "describe", "pull", "short_id"]
