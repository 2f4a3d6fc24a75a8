"""Images in the store: write config + manifest + tags, and find an image again by tag, id or digest.

An image's **id** is the digest of its config blob, as in Docker: two manifests that differ only in
how their layers are compressed are the same image. `images`, `inspect`, `history` and the build
report all show that id; the manifest digest is what tags point at and what a registry knows.
A reference is resolved, as Docker resolves it, in this order: a full digest (`sha256:<64 hex>` or
64 hex) naming a config or a manifest, `name@sha256:...`, a tag (`name` meaning `name:latest`), and
last a unique prefix of at least 12 hex digits of an image id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from layerbuild.digest import sha256_digest
from layerbuild.errors import StoreError, UsageError
from layerbuild.image.config import ImageConfig, ImageFormatError
from layerbuild.image.manifest import Descriptor, Manifest, config_descriptor
from layerbuild.reference import familiar, normalize_tag, parse_reference, split_digest_ref
from layerbuild.store import (
    MEDIA_CONFIG,
    MEDIA_LAYER_ZSTD,
    MEDIA_MANIFEST,
    BlobNotFoundError,
    LayerRecord,
    Lease,
    Store,
    Tag,
)

_MAX_META_BLOB = 16 << 20  # manifests and configs are KiB; refuse to read a "config" of gigabytes
_HEX_RE = re.compile(r"^(?:sha256:)?([0-9a-f]{12,64})$")


class ImageNotFoundError(UsageError):
    """No image in the store answers to the reference given."""


@dataclass(frozen=True)
class StoredImage:
    """An image as the store holds it: manifest and config digests, the parsed config, its layers, tags."""

    manifest_digest: str
    config_digest: str
    config: ImageConfig
    layers: tuple[LayerRecord, ...]
    tags: tuple[str, ...]
    manifest: Manifest

    @property
    def id(self) -> str:
        """The image id: the config digest (`sha256:<hex>`), as Docker defines it."""
        return self.config_digest

    @property
    def short_id(self) -> str:
        return self.config_digest.split(":", 1)[1][:12]

    @property
    def size(self) -> int:
        """Unpacked size (sum of the layers' uncompressed sizes), which is what `docker images` shows."""
        return sum(layer.diff_size for layer in self.layers)


def _pick_layer(store: Store, diff_id: str) -> LayerRecord:
    variants = store.index.layers_by_diff_id(diff_id)
    if not variants:
        raise StoreError(
            f"layer {diff_id} is not in the store", hint="build or import it before writing the image"
        )
    for record in variants:  # zstd is what the store keeps; oldest first keeps the choice stable
        if record.media_type == MEDIA_LAYER_ZSTD:
            return record
    return variants[0]


def write_image(
    store: Store,
    config: ImageConfig,
    tags: Iterable[str] = (),
    *,
    layers: Sequence[LayerRecord] | None = None,
    lease: Lease | None = None,
    raw_config: bytes | None = None,
) -> StoredImage:
    """Store `config` and a manifest for it, and point every tag (`name` → `name:latest`) at it.

    The layer blobs are looked up by the config's diff_ids (a zstd variant preferred) unless `layers`
    gives them, one per diff_id in order. Idempotent: the same config and layers give the same
    digests. Everything written is held by `lease` (a fresh one if not given) until the tags exist.
    """
    names = tuple(dict.fromkeys(normalize_tag(t) for t in tags))
    if layers is None:
        records = tuple(_pick_layer(store, d) for d in config.diff_ids)
    else:
        records = tuple(layers)
        if tuple(r.diff_id for r in records) != config.diff_ids:
            raise UsageError("the layers given do not match the config's diff_ids")
    own = lease is None
    held = store.lease() if lease is None else lease
    try:
        held.add(*(r.digest for r in records), *config.diff_ids)
        # A loaded image keeps its config bytes, and so its id, exactly as the other tool wrote them.
        config_bytes = raw_config if raw_config is not None else config.to_json()
        # Leased before they are put: nothing but the lease references them until the rows exist.
        held.add(sha256_digest(config_bytes))
        cinfo = store.blobs.put(config_bytes)
        manifest = Manifest(
            config=config_descriptor(cinfo.digest, cinfo.size),
            layers=tuple(Descriptor(r.media_type, r.digest, r.size) for r in records),
        )
        manifest_bytes = manifest.to_json()
        held.add(sha256_digest(manifest_bytes))
        minfo = store.blobs.put(manifest_bytes)
        store.index.put_image(cinfo.digest, "config", MEDIA_CONFIG, cinfo.size, config.diff_ids)
        store.index.put_image(
            minfo.digest, "manifest", MEDIA_MANIFEST, minfo.size, [cinfo.digest, *(r.digest for r in records)]
        )
        for name in names:
            store.index.set_tag(name, minfo.digest)
    finally:
        if own:
            held.release()
    return StoredImage(minfo.digest, cinfo.digest, config, records, names, manifest)


def read_blob(store: Store, digest: str, what: str) -> bytes:
    """A small blob (manifest, config), verified against its digest."""
    info = store.blobs.stat(digest)
    if info is None:
        raise StoreError(f"the {what} blob {digest} is missing from the store", hint="run `layerbuild fsck`")
    if info.size > _MAX_META_BLOB:
        raise ImageFormatError(f"the {what} blob {digest} is {info.size} bytes, too large to be a {what}")
    try:
        with store.open_blob(digest) as f:
            return f.read()
    except BlobNotFoundError:
        raise StoreError(
            f"the {what} blob {digest} is missing from the store", hint="run `layerbuild fsck`"
        ) from None


def load_image(store: Store, manifest_digest: str, tags: Sequence[str] | None = None) -> StoredImage:
    """The image whose manifest is `manifest_digest`; `tags` defaults to every tag pointing at it."""
    manifest = Manifest.from_json(read_blob(store, manifest_digest, "manifest"))
    config = ImageConfig.from_json(read_blob(store, manifest.config.digest, "config"))
    if len(manifest.layers) != len(config.diff_ids):
        raise ImageFormatError(
            f"manifest {manifest_digest} lists {len(manifest.layers)} layer(s) but its config "
            f"{len(config.diff_ids)} diff_id(s)"
        )
    layers = []
    for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        record = store.index.get_layer(desc.digest)
        if record is None:
            raise StoreError(
                f"layer blob {desc.digest} of image {manifest_digest} is not in the index",
                hint="run `layerbuild fsck`",
            )
        if record.diff_id != diff_id:
            raise ImageFormatError(
                f"layer blob {desc.digest} holds {record.diff_id}, but the config says {diff_id}"
            )
        layers.append(record)
    if tags is None:
        tags = tuple(t.name for t in store.index.list_tags() if t.digest == manifest_digest)
    return StoredImage(manifest_digest, manifest.config.digest, config, tuple(layers), tuple(tags), manifest)


def _manifests_of_config(store: Store, config_digest: str) -> list[str]:
    """Manifests that use `config_digest`, tagged ones first (most recently tagged first), then newest."""
    candidates = [m for m in store.index.list_images("manifest") if config_digest in m.refs]
    tagged = {t.digest: t.updated for t in store.index.list_tags()}
    candidates.sort(key=lambda m: (m.digest not in tagged, -tagged.get(m.digest, 0.0), -m.created, m.digest))
    return [m.digest for m in candidates]


def _by_digest(store: Store, digest: str) -> str | None:
    record = store.index.get_image(digest)
    if record is not None and record.kind == "manifest":
        return digest
    if record is not None and record.kind == "config":
        found = _manifests_of_config(store, digest)
        return found[0] if found else None
    return None


def _by_prefix(store: Store, ref: str, hexpart: str) -> str | None:
    manifests = store.index.list_images("manifest")
    configs = {c for m in manifests for c in m.refs if c.startswith("sha256:" + hexpart)}
    configs = {c for c in configs if (rec := store.index.get_image(c)) is not None and rec.kind == "config"}
    if len(configs) > 1:
        shown = ", ".join(sorted(c.split(":", 1)[1][:16] for c in configs))
        raise UsageError(f"image id prefix {ref!r} is ambiguous: {shown}", hint="give more digits")
    if configs:
        return _manifests_of_config(store, configs.pop())[0]
    digests = [m.digest for m in manifests if m.digest.startswith("sha256:" + hexpart)]
    return digests[0] if len(digests) == 1 else None


def tag_names(ref: str) -> tuple[str, ...]:
    """The tags `ref` may be stored under, as docker matches names: as written (`busybox` →
    `busybox:latest`), fully normalised (`docker.io/library/busybox:latest`, as `pull` stores it) and
    in docker's familiar form. Empty if `ref` is no tag at all."""
    try:
        names = [normalize_tag(ref)]
    except UsageError:
        return ()
    try:
        full = str(parse_reference(names[0]))
    except UsageError:
        return tuple(names)
    return tuple(dict.fromkeys([*names, full, familiar(full)]))


def find_tag(store: Store, ref: str) -> Tag | None:
    """The stored tag `ref` names (see tag_names), or None."""
    for name in tag_names(ref):
        tag = store.index.get_tag(name)
        if tag is not None:
            return tag
    return None


def _by_repo_digest(store: Store, name: str, digest: str) -> str | None:
    """The store's manifest of the image pulled (or pushed) as `name@digest`, if it is still there."""
    try:
        repo = parse_reference(name or "x", default_tag=False).name
    except UsageError:
        return None
    manifest = store.index.get_repo_digest(repo, digest)
    if manifest is not None and store.index.get_image(manifest) is not None:
        return manifest
    return None


def resolve_manifest(store: Store, ref: str) -> str:
    """The manifest digest `ref` names (see the module docstring for the order); ImageNotFoundError if none."""
    ref = ref.strip()
    hex_match = _HEX_RE.match(ref)
    if hex_match and len(hex_match.group(1)) == 64:
        found = _by_digest(store, "sha256:" + hex_match.group(1))
        if found is not None:
            return found
    pinned = split_digest_ref(ref)
    if pinned is not None:
        digest = pinned[1]
        found = _by_digest(store, digest) if digest.startswith("sha256:") else None
        if found is None:
            found = _by_repo_digest(store, pinned[0].rpartition(":")[0] if ":" in pinned[0].rpartition("/")[2]
                                    else pinned[0], digest)
        if found is not None:
            return found
    elif ref:
        tag = find_tag(store, ref)
        if tag is not None:
            return tag.digest
    if hex_match:
        found = _by_prefix(store, ref, hex_match.group(1))
        if found is not None:
            return found
    raise _not_found(store, ref)


def resolve_image(store: Store, ref: str) -> StoredImage:
    """The image `ref` names: a tag, an image id (full, or 12+ hex digits), or a manifest digest."""
    return load_image(store, resolve_manifest(store, ref))


def _not_found(store: Store, ref: str) -> ImageNotFoundError:
    names = [t.name for t in store.index.list_tags()]
    candidates = set(names) | {n.rpartition(":")[0] for n in names}
    import difflib  # only for a reference that names nothing

    close = difflib.get_close_matches(ref, sorted(candidates), n=3, cutoff=0.6)
    if close:
        hint = "did you mean " + " or ".join(close) + "?"
    elif names:
        hint = "`layerbuild images` lists the images in the store"
    else:
        hint = "the store holds no tagged images yet"
    return ImageNotFoundError(f"no such image: {ref}", hint=hint)


def list_images(store: Store) -> tuple[tuple[str, StoredImage], ...]:
    """Every tag with its image, newest image first (then by tag name), as `images` shows them."""
    by_manifest: dict[str, list[str]] = {}
    for tag in store.index.list_tags():
        by_manifest.setdefault(tag.digest, []).append(tag.name)
    rows: list[tuple[str, StoredImage]] = []
    for digest, names in by_manifest.items():
        image = load_image(store, digest, tuple(names))
        rows.extend((name, image) for name in names)
    rows.sort(key=lambda row: row[0])
    rows.sort(key=lambda row: row[1].config.created or "", reverse=True)
    return tuple(rows)


def tag_image(store: Store, source: str, target: str) -> str:
    """Point tag `target` at the image `source` names; returns the normalised tag."""
    digest = resolve_manifest(store, source)
    name = normalize_tag(target)
    store.index.set_tag(name, digest)
    return name


def untag_image(store: Store, ref: str, *, force: bool = False) -> tuple[str, ...]:
    """Remove a tag, like `docker rmi`: by tag, that tag; by id, every tag of the image (with `force`
    when there are several). Blobs stay until `prune`. Returns the tags removed."""
    tag = find_tag(store, ref)
    if tag is not None:  # a name wins over an id prefix, as in `resolve_manifest`
        store.index.delete_tag(tag.name)
        return (tag.name,)
    image = resolve_image(store, ref)
    if not image.tags:
        raise UsageError(
            f"image {image.short_id} has no tags to remove", hint="`layerbuild prune` removes it"
        )
    if len(image.tags) > 1 and not force:
        raise UsageError(
            f"image {image.short_id} has several tags: {', '.join(image.tags)}",
            hint="remove them by name, or pass --force to remove them all",
        )
    for name in image.tags:
        store.index.delete_tag(name)
    return image.tags
