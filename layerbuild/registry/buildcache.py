"""The build cache that machines share through a registry (or an OCI layout directory that CI saves).

Format: an OCI image manifest of artifact type `application/vnd.layerbuild.cache.v1` behind a tag. Its
config blob (`application/vnd.layerbuild.cache.records.v1+json`) holds the records, one per step:

    {"version": 1, "records": [{"key": "<sha256 hex of the step's op definition and inputs>",
      "kind": "RUN", "diff_id": "sha256:…" | null, "layer": {"mediaType", "digest", "size"} | null,
      "diff_size": 123, "size": 45, "created": 1700000000.0, "platform": "linux/amd64",
      "stage": "build", "instruction": "RUN make", "files": {"src/app.py": "<fingerprint>"}}]}

and its layers are the layer blobs the records name: ordinary blobs, shared with the images pushed to
the same repository (and so kept by the registry's garbage collection). Keys are the store's own cache
keys, which are sha256 over the op definitions, the results of the inputs and the sha256 of the files
read (solve.keys): a record cannot be forged for another step's key.

An export merges: it reads the records behind the tag, adds its own (newer ones win), writes the blobs
the registry lacks and the manifest, then reads the tag again and retries the merge when another
writer's manifest replaced its own, so concurrent exports keep each other's records. An export that
adds nothing writes nothing. Imports verify everything: the manifest and records against their
digests, each layer against its digest and the diff_id its record names, through the store's door.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from layerbuild.errors import LayerbuildError, RegistryError
from layerbuild.image.manifest import Descriptor
from layerbuild.reference import Reference, parse_reference
from layerbuild.registry.client import INDEX_TYPES, OCI_MANIFEST, RegistryClient
from layerbuild.store import MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, LayerRecord, Store

ARTIFACT_TYPE = "application/vnd.layerbuild.cache.v1"
RECORDS_TYPE = "application/vnd.layerbuild.cache.records.v1+json"
LAYER_TYPES = (MEDIA_LAYER_GZIP, MEDIA_LAYER_ZSTD, "application/vnd.oci.image.layer.v1.tar",
               # an inline cache's layers are its image's, pushed in Docker's types or OCI's
               "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar")
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_RECORDS_BYTES = 64 << 20
INLINE_KEY = "layerbuild.cache.v1"  # the image config's field that carries an inline cache
IMAGE_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")


class CacheFormatError(LayerbuildError):
    """The records behind a cache reference are not layerbuild's cache format."""


@dataclass(frozen=True)
class CacheEntry:
    """One step's record: its key, and what it produced (a layer, or none for a config-only step)."""

    key: str
    kind: str
    diff_id: str | None
    layer: Descriptor | None
    diff_size: int | None = None
    size: int | None = None
    created: float = 0.0
    platform: str = ""
    stage: str = ""
    instruction: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    last_used: float = 0.0  # when an export last had this record (a day's precision): what max-size evicts by

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["layer"] = ({"mediaType": self.layer.media_type, "digest": self.layer.digest, "size": self.layer.size}
                        if self.layer is not None else None)
        out["files"] = dict(self.files)
        return out

    @staticmethod
    def from_json(data: Any) -> CacheEntry:
        if not isinstance(data, dict):
            raise CacheFormatError("a cache record is not an object")
        key, diff_id, layer = data.get("key"), data.get("diff_id"), data.get("layer")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise CacheFormatError(f"a cache record has the key {key!r}, not a sha256 hex digest")
        desc = None
        if diff_id is not None or layer is not None:
            if not isinstance(diff_id, str) or not _DIGEST_RE.match(diff_id) or not isinstance(layer, dict):
                raise CacheFormatError(f"the cache record {key[:12]} names no valid layer")
            digest, size, media = layer.get("digest"), layer.get("size"), layer.get("mediaType")
            if not isinstance(digest, str) or not _DIGEST_RE.match(digest) or not isinstance(size, int) \
                    or size < 0 or media not in LAYER_TYPES:
                raise CacheFormatError(f"the cache record {key[:12]} has an invalid layer descriptor")
            desc = Descriptor(media, digest, size)
        files = data.get("files") or {}
        if not isinstance(files, dict):
            raise CacheFormatError(f"the cache record {key[:12]} has invalid files")
        return CacheEntry(
            key=key, kind=str(data.get("kind") or ""), diff_id=diff_id, layer=desc,
            diff_size=_int_or_none(data.get("diff_size")), size=_int_or_none(data.get("size")),
            created=float(data.get("created") or 0.0), platform=str(data.get("platform") or ""),
            stage=str(data.get("stage") or ""), instruction=str(data.get("instruction") or ""),
            files={str(k): str(v) for k, v in files.items()},
            last_used=float(data.get("last_used") or 0.0),
        )  # fmt: skip


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


@dataclass(frozen=True)
class MountEntry:
    """The contents of a `RUN --mount=type=cache` directory (by its id) as a tar blob."""

    id: str
    diff_id: str
    layer: Descriptor
    last_used: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "diff_id": self.diff_id, "last_used": self.last_used,
                "layer": {"mediaType": self.layer.media_type, "digest": self.layer.digest, "size": self.layer.size}}

    @staticmethod
    def from_json(data: Any) -> MountEntry:
        probe = CacheEntry.from_json({"key": "0" * 64, "diff_id": data.get("diff_id") if isinstance(data, dict)
                                      else None, "layer": data.get("layer") if isinstance(data, dict) else None})
        if probe.layer is None or probe.diff_id is None or not isinstance(data.get("id"), str):
            raise CacheFormatError("a cache mount record is malformed")
        return MountEntry(data["id"], probe.diff_id, probe.layer, float(data.get("last_used") or 0.0))


@dataclass(frozen=True)
class CacheRecords:
    """The records of one cache reference, by key, and its cache mounts' contents, by id."""

    entries: Mapping[str, CacheEntry] = field(default_factory=dict)
    mounts: Mapping[str, MountEntry] = field(default_factory=dict)

    def get(self, key: str) -> CacheEntry | None:
        return self.entries.get(key)

    def merged(self, newer: Iterable[CacheEntry], *, now: float | None = None,
               max_size: int | None = None, mounts: Iterable[MountEntry] = ()) -> CacheRecords:
        """These records with `newer` added (they win), each marked used `now`; a record that is the
        same but for its mark, marked within a day, stays as it is (so an export that brings nothing
        new changes nothing). With `max_size`, the least recently used records go until the layer
        blobs the rest name add up to at most that many bytes."""
        at = time.time() if now is None else now
        out = dict(self.entries)
        for entry in newer:
            old = out.get(entry.key)
            if old is not None and old.last_used >= at - DAY and replace(old, last_used=entry.last_used) == entry:
                continue
            out[entry.key] = replace(entry, last_used=at)
        if max_size is not None:
            out = _evict(out, max_size)
        kept = dict(self.mounts)
        for mount in mounts:
            old_mount = kept.get(mount.id)
            if old_mount is not None and old_mount.last_used >= at - DAY and \
                    replace(old_mount, last_used=mount.last_used) == mount:
                continue
            kept[mount.id] = replace(mount, last_used=at)
        return CacheRecords(out, kept)

    def blobs(self) -> dict[str, Descriptor]:
        out = {e.layer.digest: e.layer for e in self.entries.values() if e.layer is not None}
        out.update((m.layer.digest, m.layer) for m in self.mounts.values())
        return out

    def to_json(self) -> bytes:
        doc = {"version": 1, "mediaType": RECORDS_TYPE,
               "records": [self.entries[k].to_json() for k in sorted(self.entries)],
               "mounts": [self.mounts[k].to_json() for k in sorted(self.mounts)]}
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_json(raw: bytes) -> CacheRecords:
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CacheFormatError(f"the cache records are not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("records"), list):
            raise CacheFormatError("the cache records are not layerbuild's cache format (version 1)")
        entries = [CacheEntry.from_json(r) for r in doc["records"]]
        mounts = [MountEntry.from_json(m) for m in doc.get("mounts") or []]
        return CacheRecords({e.key: e for e in entries}, {m.id: m for m in mounts})

    def nearest(self, stage: str, instruction: str, files: Mapping[str, str]) -> tuple[CacheEntry, list[str]] | None:
        """The record of the same step text in the same stage whose files differ least, and those paths."""
        best: tuple[CacheEntry, list[str]] | None = None
        for entry in self.entries.values():
            if entry.stage != stage or entry.instruction != instruction:
                continue
            keys = entry.files.keys() | files.keys()
            differ = sorted(k for k in keys if entry.files.get(k) != short_fingerprint(files.get(k)))
            if best is None or len(differ) < len(best[1]):
                best = (entry, differ)
        return best


DAY = 86400.0


def _evict(entries: dict[str, CacheEntry], max_size: int) -> dict[str, CacheEntry]:
    """`entries` without their least recently used records, until their blobs fit in `max_size`."""
    users: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for e in entries.values():
        if e.layer is not None:
            users[e.layer.digest] = users.get(e.layer.digest, 0) + 1
            sizes[e.layer.digest] = e.layer.size
    total = sum(sizes.values())
    out = dict(entries)
    for e in sorted(entries.values(), key=lambda e: (e.last_used, e.key)):
        if total <= max_size:
            break
        del out[e.key]
        if e.layer is not None:
            users[e.layer.digest] -= 1
            if users[e.layer.digest] == 0:
                total -= sizes[e.layer.digest]
    return out


def short_fingerprint(fp: str | None) -> str | None:
    """What a record keeps of a file's fingerprint: enough to tell which files changed, never a key."""
    return fp[:16] if fp is not None else None


class RegistryCache:
    """The cache behind one registry reference (`host/repo:tag`)."""

    def __init__(self, client: RegistryClient, ref: str, *, platform: str = "linux/amd64") -> None:
        self.client = client
        self.sent = 0  # bytes the last write sent: layer blobs uploaded (not mounted), records, manifest
        self.platform = platform  # whose image an index's inline cache is read from
        self.ref: Reference = parse_reference(ref)
        if self.ref.digest is None and not self.ref.tag:
            self.ref = parse_reference(f"{self.ref.name}:latest")
        self.name = str(self.ref)

    def read(self, *, to_write: bool = False) -> tuple[CacheRecords, str | None]:
        """The records behind the reference and the digest of its manifest (empty, None: no cache yet).
        An image is read for the records its config carries (`--cache-to type=inline`); `to_write`:
        it is refused, so an export never replaces an image's tag with a cache."""
        # Every manifest type asked for: an image named by mistake is said to be one, not taken for none.
        desc = self.client.head_manifest(self.ref)
        if desc is None:
            return CacheRecords(), None
        fetched = self.client.get_manifest(self.ref)
        try:
            manifest = json.loads(fetched.data)
            if fetched.media_type in INDEX_TYPES or (isinstance(manifest, dict) and "manifests" in manifest
                                                     and "config" not in manifest):
                if to_write:
                    raise CacheFormatError(f"{self.name} is a multi-platform image, not a layerbuild cache",
                                           hint="export the cache to a tag of its own (e.g. REPO:buildcache)")
                return self._inline(fetched), fetched.digest
            config = manifest["config"]
            if manifest.get("artifactType") != ARTIFACT_TYPE or config.get("mediaType") != RECORDS_TYPE:
                if to_write or manifest.get("artifactType") or config.get("mediaType") not in IMAGE_CONFIG_TYPES:
                    raise CacheFormatError(f"{self.name} is not a layerbuild cache (its artifact type is "
                                           f"{manifest.get('artifactType') or config.get('mediaType')!r})",
                                           hint="name a reference that `--cache-to` wrote"
                                           + ("" if not to_write else ", or a tag of its own for the cache"))
                return self._inline(fetched), fetched.digest
            raw = self.client.get_blob(self.ref, str(config["digest"]), max_size=MAX_RECORDS_BYTES)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise CacheFormatError(f"{self.name}: the cache manifest is malformed ({exc})") from None
        return CacheRecords.from_json(raw), fetched.digest

    def _inline(self, fetched: Any) -> CacheRecords:
        """The records an image's config carries (for an index, the build platform's image), with the
        image's own layers as their blobs; its config is checked against the manifest as a pull's is."""
        from layerbuild.platforms import parse_platform
        from layerbuild.registry.images import RegistryIndex, from_manifest

        image = from_manifest(self.client, self.ref, fetched)
        if isinstance(image, RegistryIndex):
            image = image.image(image.select(parse_platform(self.platform)).digest)
        return inline_records(image.config_bytes, image.manifest.layers, self.name)

    def fetch_layer(self, store: Store, entry: CacheEntry | MountEntry) -> LayerRecord:
        """The record's layer brought into the store, checked against its digest and diff_id."""
        from layerbuild.image.storeimage import ingest_checked

        assert entry.layer is not None and entry.diff_id is not None
        desc = entry.layer

        from layerbuild.registry.images import RegistryLayer

        layer = RegistryLayer(self.client, self.ref, desc, entry.diff_id)
        record = ingest_checked(store, layer, what=f"cache layer {desc.digest} of {self.name}")
        if record.digest == desc.digest:  # kept as it came: a push to this registry can mount it from here
            store.index.note_blob_repos(self.ref.name, [desc.digest])
        return record

    def layer(self, entry: CacheEntry) -> Any:
        """The record's layer as this cache holds it (streamed and checked as it is read)."""
        from layerbuild.registry.images import RegistryLayer

        assert entry.layer is not None and entry.diff_id is not None
        return RegistryLayer(self.client, self.ref, entry.layer, entry.diff_id)

    def write(self, store: Store, entries: Sequence[CacheEntry], *, compression: str,
              max_size: int | None = None, mounts: Sequence[MountEntry] = (), attempts: int = 16,
              settle: float = 0.05, borrowed: Mapping[str, Any] | None = None) -> str:
        """Merge `entries` into the cache behind the reference; what it did: `unchanged` or `written`.
        `borrowed`: layers (by blob digest) the store lacks, as another cache holds them: mounted from
        there when it is a repository of the same registry, else streamed from it."""
        known: set[str] = set()
        outcome = "unchanged"
        self.sent = 0
        for attempt in range(attempts):
            if attempt:  # another writer landed in between: back off, with jitter, then merge again
                time.sleep(random.random() * min(1.0, settle * 2 ** attempt))
            current, digest = self.read(to_write=True)
            known |= set(current.blobs())
            merged = current.merged(entries, max_size=max_size, mounts=mounts)
            if digest is not None and merged == current:
                return outcome
            for desc in merged.blobs().values():
                if desc.digest in known:
                    continue  # named by the records just read: the registry has it, no need to ask
                if desc.digest not in current.blobs():
                    self._count(self._upload_layer(store, desc, (borrowed or {}).get(desc.digest)), desc.size)
                known.add(desc.digest)
            records = merged.to_json()
            config = Descriptor(RECORDS_TYPE, "sha256:" + _sha256(records), len(records))
            self._count(self.client.upload_blob(self.ref, config.digest, config.size, _bytes_source(records),
                                                single_post=True), config.size)
            manifest = _manifest(config, list(merged.blobs().values()))
            # The tag moved since it was read (another runner exported): merge again before writing.
            now = self.client.head_manifest(self.ref)
            if (now.digest if now is not None else None) != digest:
                continue
            self.client.put_manifest(self.ref, manifest, OCI_MANIFEST)
            self.sent += len(manifest)
            outcome = "written"
            time.sleep(settle + random.random() * settle)  # let a writer that raced us land, then check
            after, _ = self.read(to_write=True)
            if all(after.get(e.key) is not None for e in entries if merged.get(e.key) is not None) and \
                    all(m.id in after.mounts for m in mounts):
                return outcome
            # Another writer replaced our manifest with one that lacks our records: merge again.
        raise RegistryError(f"{self.name}: the cache kept moving while it was being written",
                            hint="other builds export to the same reference; try again")

    def _count(self, how: str, size: int) -> None:
        if how == "uploaded":
            self.sent += size

    def _upload_layer(self, store: Store, desc: Descriptor, elsewhere: Any = None) -> str:
        """Make the layer blob `desc` exist behind the reference; how (see `RegistryClient.upload_blob`)."""
        from layerbuild.image.storeimage import StoreLayer
        from layerbuild.registry.images import RegistryLayer

        record = store.index.get_layer(desc.digest)
        if record is None or store.blobs.stat(desc.digest) is None:
            if elsewhere is None:
                raise LayerbuildError(f"the layer blob {desc.digest} is not in the store")
            # Taken from another cache and never downloaded: mounted from it, or streamed through.
            source = elsewhere.repo if isinstance(elsewhere, RegistryLayer) else None
            mount = source if source is not None and source.domain == self.ref.domain else None
            return self.client.upload_blob(self.ref, desc.digest, desc.size, elsewhere.compressed, mount_from=mount)
        layer = StoreLayer(store, record)
        prefix = self.ref.domain + "/"
        for repo in store.index.blob_repos(desc.digest):  # pushed or pulled there: mounted, not sent again
            if repo.startswith(prefix) and repo != self.ref.name:
                # Mounted, or (a registry that will not mount) uploaded in the same call.
                how = self.client.upload_blob(self.ref, desc.digest, desc.size, layer.compressed,  # type: ignore[arg-type]
                                              mount_from=Reference(self.ref.domain, repo[len(prefix):]))
                store.index.note_blob_repos(self.ref.name, [desc.digest])
                return how
        how = self.client.upload_blob(self.ref, desc.digest, desc.size, layer.compressed)  # type: ignore[arg-type]
        store.index.note_blob_repos(self.ref.name, [desc.digest])
        return how


def _manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    from layerbuild.image.manifest import Manifest

    return Manifest(config, tuple(sorted(layers, key=lambda d: d.digest)), artifact_type=ARTIFACT_TYPE).to_json()


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _bytes_source(data: bytes) -> Callable[[], Any]:
    import contextlib
    import io

    @contextlib.contextmanager
    def opened() -> Any:
        yield io.BytesIO(data)
    return opened


def inline_json(entries: Sequence[CacheEntry]) -> str:
    """`--cache-to type=inline`: the records of `entries` as the image config's `layerbuild.cache.v1`
    field. A record names its layer by diff_id only; its blob is the image's layer of that diff_id,
    whatever compression the image is pushed in. Canonical JSON: the same steps give the same config."""
    records = []
    for entry in sorted(entries, key=lambda e: e.key):
        doc = replace(entry, layer=None, last_used=0.0).to_json()
        del doc["layer"], doc["last_used"]
        records.append(doc)
    return json.dumps({"version": 1, "records": records}, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def inline_records(config: bytes, layers: Sequence[Descriptor], name: str) -> CacheRecords:
    """The records an image config (bytes verified by the caller's client) carries in its
    `layerbuild.cache.v1` field, each layer record given the image's layer blob of its diff_id."""
    try:
        doc = json.loads(config)
        diff_ids = doc["rootfs"]["diff_ids"]
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise CacheFormatError(f"{name}: the image config is malformed") from None
    inline = doc.get(INLINE_KEY) if isinstance(doc, dict) else None
    if inline is None:
        raise CacheFormatError(f"{name} is an image that carries no cache records",
                               hint="build and push it with `--cache-to type=inline`, or name a reference that "
                                    "`--cache-to type=registry` wrote")
    if not isinstance(inline, dict) or inline.get("version") != 1 or not isinstance(inline.get("records"), list) \
            or not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise CacheFormatError(f"{name}: the inline cache records are not layerbuild's format (version 1)")
    blob_of = dict(zip(diff_ids, layers, strict=True))
    entries = []
    for record in inline["records"]:
        if isinstance(record, dict) and record.get("diff_id") is not None:
            desc = blob_of.get(record["diff_id"])
            if desc is None:
                continue  # a layer the image does not have (a step of another stage): no blob to take
            record = {**record, "layer": {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}}
        entries.append(CacheEntry.from_json(record))
    return CacheRecords({e.key: e for e in entries})


class LocalCache:
    """The cache in an OCI layout directory (`type=local`): what CI cache actions save and restore.
    The same manifest and records as in a registry, under the tag `latest` of `index.json`."""

    TAG = "latest"

    def __init__(self, path: str) -> None:
        from pathlib import Path

        self.root = Path(path)
        self.name = str(self.root)
        self.sent = 0  # bytes the last write wrote: new blobs, records, manifest

    def _blob(self, digest: str) -> Any:
        if not _DIGEST_RE.match(digest):
            raise CacheFormatError(f"{self.name}: {digest!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / digest.partition(":")[2]

    def _read_blob(self, digest: str, limit: int) -> bytes:
        path = self._blob(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise CacheFormatError(f"{self.name}: blob {digest} is missing") from None
        if len(data) > limit or "sha256:" + _sha256(data) != digest:
            raise CacheFormatError(f"{self.name}: blob {digest} does not hash to its name",
                                   hint="the directory was damaged or edited; delete it to start afresh")
        return data

    def read(self) -> tuple[CacheRecords, str | None]:
        try:
            index = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return CacheRecords(), None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CacheFormatError(f"{self.name}/index.json is not JSON: {exc}") from None
        try:
            desc = next(m for m in index.get("manifests", [])
                        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == self.TAG)
        except (StopIteration, AttributeError, TypeError):
            return CacheRecords(), None
        try:
            manifest_digest = str(desc["digest"])
            manifest = json.loads(self._read_blob(manifest_digest, MAX_RECORDS_BYTES))
            config = manifest["config"]
            if manifest.get("artifactType") != ARTIFACT_TYPE or config.get("mediaType") != RECORDS_TYPE:
                raise CacheFormatError(f"{self.name} is not a layerbuild cache")
            raw = self._read_blob(str(config["digest"]), MAX_RECORDS_BYTES)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise CacheFormatError(f"{self.name}: the cache manifest is malformed ({exc})") from None
        return CacheRecords.from_json(raw), manifest_digest

    def fetch_layer(self, store: Store, entry: CacheEntry | MountEntry) -> LayerRecord:
        from layerbuild.image.storeimage import ingest_checked

        assert entry.layer is not None and entry.diff_id is not None
        return ingest_checked(store, _FileLayer(self._blob(entry.layer.digest), entry.layer, entry.diff_id),  # type: ignore[arg-type]
                              what=f"cache layer {entry.layer.digest} of {self.name}")

    def layer(self, entry: CacheEntry) -> Any:
        """The record's layer as this cache holds it (a file; the store's door checks what is read)."""
        assert entry.layer is not None and entry.diff_id is not None
        return _FileLayer(self._blob(entry.layer.digest), entry.layer, entry.diff_id)

    def write(self, store: Store, entries: Sequence[CacheEntry], *, compression: str,
              max_size: int | None = None, mounts: Sequence[MountEntry] = (),
              borrowed: Mapping[str, Any] | None = None) -> str:
        import contextlib
        import hashlib
        import os
        import shutil

        self.sent = 0
        current, digest = self.read()
        merged = current.merged(entries, max_size=max_size, mounts=mounts)
        if digest is not None and merged == current:
            return "unchanged"
        blobs = self.root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for desc in merged.blobs().values():
            dest = self._blob(desc.digest)
            if dest.exists():
                continue
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            elsewhere = (borrowed or {}).get(desc.digest)
            if elsewhere is not None and store.blobs.stat(desc.digest) is None:
                # Taken from another cache and never downloaded: copied from there, checked on the way.
                digest_of = hashlib.sha256()
                try:
                    with elsewhere.compressed() as src, open(tmp, "wb") as out:
                        while chunk := src.read(1 << 20):
                            digest_of.update(chunk)
                            out.write(chunk)
                    if f"sha256:{digest_of.hexdigest()}" != desc.digest:
                        raise CacheFormatError(f"the cache layer {desc.digest} read from another cache has "
                                               "other bytes", hint="that cache is damaged; nothing was kept")
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
            else:
                with store.reading_blob(desc.digest) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
            self.sent += desc.size
        records = merged.to_json()
        config = Descriptor(RECORDS_TYPE, "sha256:" + _sha256(records), len(records))
        manifest = _manifest(config, list(merged.blobs().values()))
        mdigest = "sha256:" + _sha256(manifest)
        for digest_, data in ((config.digest, records), (mdigest, manifest)):
            path = self._blob(digest_)
            if not path.exists():
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                self.sent += len(data)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        from layerbuild.image.ocilayout import layout_index_json

        tmp = self.root / f".index.json.tmp-{os.getpid()}"
        tmp.write_bytes(layout_index_json(Descriptor(OCI_MANIFEST, mdigest, len(manifest)), [f"cache:{self.TAG}"]))
        os.replace(tmp, self.root / "index.json")
        keep = {p.name for p in (self._blob(d) for d in [*merged.blobs(), config.digest, mdigest])}
        for old in blobs.iterdir():  # what the previous manifest named and this one does not
            if old.name not in keep:
                old.unlink(missing_ok=True)
        return "written"


@dataclass(frozen=True)
class _FileLayer:
    """A layer blob in a file of a local cache; the store's door checks what is read."""

    path: Any
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

    def compressed(self, *, verify: bool = True) -> Any:
        import contextlib

        @contextlib.contextmanager
        def opened() -> Any:
            try:
                f = open(self.path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise CacheFormatError(f"the cache layer {self.digest} is missing from {self.path.parent}") from None
            with f:
                yield f
        return opened()
