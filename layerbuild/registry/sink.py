"""A registry repository as an `ImageSink` (the write side of the image protocol): blobs, then the
config, then the manifest by tag.

Blobs go first, a bounded number at once (the config among them): a blob the repository has is skipped, one the caller
knows in another repository of the same registry is mounted from there, and the rest are uploaded
(monolithic, with the client's chunked fallback, restarted on dropped connections). The config
follows, and the manifest last, once per tag: until that PUT nothing of the push is visible under a
name, so a failed push moves no tag (the blobs it sent stay unreferenced, as a registry's garbage
collector expects). The manifest is rewritten only when its media types must change (`format`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from layerbuild.errors import UsageError
from layerbuild.image.manifest import DOCKER_CONFIG, DOCKER_MANIFEST, Descriptor, Manifest
from layerbuild.image.protocol import Image, Layer, check_bytes
from layerbuild.reference import Reference
from layerbuild.registry.client import BlobSource, RegistryClient
from layerbuild.store import MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST

DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
# A layer's media type in each manifest format, by its compression.
_LAYER_TYPES = {
    "docker": {"gzip": DOCKER_LAYER_GZIP, "tar": DOCKER_LAYER_TAR},
    "oci": {"gzip": MEDIA_LAYER_GZIP, "tar": MEDIA_LAYER_TAR, "zstd": MEDIA_LAYER_ZSTD},
}
_COMPRESSION = {
    MEDIA_LAYER_GZIP: "gzip", DOCKER_LAYER_GZIP: "gzip", MEDIA_LAYER_TAR: "tar", DOCKER_LAYER_TAR: "tar",
    MEDIA_LAYER_ZSTD: "zstd", "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}
FORMATS = ("docker", "oci")
DEFAULT_JOBS = 5  # docker's max-concurrent-uploads


@dataclass(frozen=True)
class BlobEvent:
    """How one blob of a push is going: `status` is `waiting`, `pushing` (with `sent` of `size` bytes),
    `exists`, `mounted` (from `source`, a repository path) or `pushed`; `layer` says whether it is a
    layer (else the config); `diff_id` is the layer's."""

    digest: str
    size: int
    status: str
    layer: bool = True
    diff_id: str = ""
    sent: int = 0
    source: str = ""


def convert_manifest(image: Image, fmt: str | None) -> tuple[bytes, str]:
    """The image's manifest bytes and media type in format `fmt` (`docker`, `oci`, or None: as it is).
    The image's own bytes are kept when they already are in that format, so its digest is kept."""
    if fmt is None:
        return image.manifest_bytes, image.media_type
    if fmt not in FORMATS:
        raise UsageError(f"unknown manifest format {fmt!r}", hint="use docker or oci")
    manifest = image.manifest
    layers = []
    for desc in manifest.layers:
        compression = _COMPRESSION.get(desc.media_type)
        media_type = _LAYER_TYPES[fmt].get(compression or "")
        if media_type is None:
            raise UsageError(f"layer {desc.digest} ({desc.media_type}) cannot be written in a {fmt} manifest",
                             hint="Docker's manifest format has gzip or plain layers only: push zstd layers "
                                  "with --format oci" if compression == "zstd" else "push it with --format oci")
        layers.append(Descriptor(media_type, desc.digest, desc.size, desc.annotations))
    config_type, manifest_type = (DOCKER_CONFIG, DOCKER_MANIFEST) if fmt == "docker" else (MEDIA_CONFIG, MEDIA_MANIFEST)
    config = Descriptor(config_type, manifest.config.digest, manifest.config.size, manifest.config.annotations)
    converted = Manifest(config=config, layers=tuple(layers), media_type=manifest_type,
                         annotations=manifest.annotations if fmt == "oci" else ())
    if converted == manifest and image.media_type == manifest_type:
        return image.manifest_bytes, manifest_type
    return converted.to_json(), manifest_type


class RegistrySink:
    """Images into the repository `repo` of a registry (see the module docstring).

    `tags` given to `write` are tags of that repository (`1.0`); with none, the manifest is stored by
    its digest only. `fmt` is the manifest format written (None: the image's own). `mount_sources(digest)`
    names repositories (paths, same registry) that may hold a blob, tried as mount sources in order.
    `on_event` hears every BlobEvent (from the upload threads: it must be thread-safe). `jobs` bounds the
    uploads in flight. After `write`, `results` maps each blob's digest to how it got there."""

    def __init__(self, client: RegistryClient, repo: Reference, *, fmt: str | None = None, jobs: int = DEFAULT_JOBS,
                 mount_sources: Callable[[str], Sequence[str]] | None = None,
                 on_event: Callable[[BlobEvent], None] | None = None) -> None:
        self.client = client
        self.repo = repo.repository()
        self.fmt = fmt
        self.jobs = max(1, jobs)
        self.mount_sources = mount_sources or (lambda digest: ())
        self.on_event = on_event or (lambda event: None)
        self.results: dict[str, str] = {}
        self.manifest_size = 0
        self.media_type = ""
        self._lock = threading.Lock()

    def write(self, image: Image, tags: Sequence[str] = ()) -> str:
        manifest_bytes, media_type = convert_manifest(image, self.fmt)
        config_desc = image.config_descriptor
        config_bytes = check_bytes(image.config_bytes, config_desc, f"the config {config_desc.digest}")
        layers = image.layers
        if len(layers) != len(image.config.diff_ids):
            raise UsageError(f"the image has {len(layers)} layer(s) but its config names "
                             f"{len(image.config.diff_ids)} diff_id(s)")
        unique: dict[str, Layer] = {}
        for layer in layers:
            unique.setdefault(layer.digest, layer)
        for layer in unique.values():
            self.on_event(BlobEvent(layer.digest, layer.size, "waiting", diff_id=layer.diff_id))
        # The config goes beside the layers: the registry links nothing until the manifest.
        tasks = [functools.partial(self._push_layer, layer) for layer in unique.values()]
        tasks.append(functools.partial(self._push_config, config_desc, config_bytes))
        run_all(tasks, self.jobs)
        names = [self.repo.with_tag(t) for t in tags] or [self.repo.with_digest(_digest(manifest_bytes))]
        digest = ""
        for ref in names:
            digest = self.client.put_manifest(ref, manifest_bytes, media_type)
        self.manifest_size, self.media_type = len(manifest_bytes), media_type
        return digest

    def _push_config(self, desc: Descriptor, data: bytes) -> None:
        status = self.client.upload_blob(self.repo, desc.digest, desc.size, data)
        self._done(desc.digest, desc.size, status, layer=False)

    def _push_layer(self, layer: Layer) -> None:
        digest, size = layer.digest, layer.size
        status = None
        if self.client.stat_blob(self.repo, digest) is not None:
            status = "exists"
        else:
            for source in self.mount_sources(digest):
                if source == self.repo.path:
                    continue
                mount_from = Reference(self.repo.domain, source)
                status = self.client.upload_blob(self.repo, digest, size, _opener(layer),
                                                 mount_from=mount_from, progress=self._progress(layer))
                if status == "mounted":
                    self._done(digest, size, status, diff_id=layer.diff_id, source=source)
                    return
                break  # the registry did not have it there and took the upload instead
            if status is None:
                status = self.client.upload_blob(self.repo, digest, size, _opener(layer),
                                                 progress=self._progress(layer))
        self._done(digest, size, status, diff_id=layer.diff_id)

    def _progress(self, layer: Layer) -> Callable[[int], None]:
        def tell(sent: int) -> None:
            self.on_event(BlobEvent(layer.digest, layer.size, "pushing", diff_id=layer.diff_id, sent=sent))
        return tell

    def _done(self, digest: str, size: int, status: str, *, layer: bool = True, diff_id: str = "",
              source: str = "") -> None:
        shown = {"exists": "exists", "mounted": "mounted", "uploaded": "pushed"}.get(status, status)
        with self._lock:
            self.results[digest] = shown
        self.on_event(BlobEvent(digest, size, shown, layer=layer, diff_id=diff_id, sent=size, source=source))


def run_all(tasks: Sequence[Callable[[], object]], jobs: int) -> None:
    """Run `tasks` on up to `jobs` threads (this one among them), in order of start. Once one has
    failed no other starts; those running are waited for, and the first failure is raised.

    (What `ThreadPoolExecutor` + `wait(FIRST_EXCEPTION)` did here, without concurrent.futures,
    whose import of logging and traceback was a tenth of a push whose blobs all exist.)"""
    pending = iter(tasks)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                task = None if failures else next(pending, None)
            if task is None:
                return
            try:
                task()
            except BaseException as exc:  # raised again by the caller's thread
                with lock:
                    failures.append(exc)
                return

    helpers = [threading.Thread(target=work, name=f"push-{i}") for i in range(min(jobs, len(tasks)) - 1)]
    for thread in helpers:
        thread.start()
    try:
        work()
    finally:
        for thread in helpers:
            thread.join()
    if failures:
        raise failures[0]


def _opener(layer: Layer) -> BlobSource:
    """A fresh verifying reader of the layer's blob per try: the client enters it as a context, so
    reading it to its end checks the bytes sent (and the registry checks them against the digest)."""
    return cast(BlobSource, layer.compressed)


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()
