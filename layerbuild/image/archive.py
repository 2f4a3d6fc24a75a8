"""Image archives for other tools: an OCI image layout (tar) and Docker's `docker save` format.

`oci`: `oci-layout`, `index.json` and `blobs/sha256/...` with the blobs exactly as stored (zstd
layers), the layout BuildKit's `type=oci` exporter and `skopeo copy oci-archive:` speak.
`docker`: `manifest.json`, the config and each layer as an uncompressed `layer.tar` (what `docker load`
reads on every Docker version; its diff_id is the sha256 of that file). Both are deterministic tars
written through a temp file and renamed.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from layerbuild.digest import sha256_digest
from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.image.export import atomic_file
from layerbuild.image.manifest import Descriptor, Manifest
from layerbuild.image.store_io import StoredImage, read_blob
from layerbuild.layer.compression import sniff_compression
from layerbuild.reference import split_tag
from layerbuild.store import MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST, LayerRecord, Store
from layerbuild.store.blobs import read_to_end


def _info(name: str, size: int, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    tar.addfile(_info(name, 0, 0o755, tarfile.DIRTYPE))


def _blob(store: Store, digest: str) -> Path:
    path = store.blobs.path(digest)
    if not path.is_file():
        raise LayerbuildError(f"blob {digest} is missing from the store", hint="run `layerbuild fsck`")
    return path


def gzip_variant(store: Store, layer: LayerRecord) -> LayerRecord:
    """The layer as a gzip blob (made once and kept in the store): what every OCI tool reads."""
    for record in store.index.layers_by_diff_id(layer.diff_id):
        if record.media_type == MEDIA_LAYER_GZIP and store.blobs.stat(record.digest) is not None:
            return record
    # mtime 0 and no file name in the gzip header: the same layer always gives the same blob.
    _blob(store, layer.digest)
    with store.reading_blob(layer.digest) as src, store.blobs.writer() as out:
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        reader = _uncompressed(src)
        while chunk := reader.read(1 << 20):
            out.write(gz.compress(chunk))
        read_to_end(src)  # checked before the new blob is committed: a damaged source makes none
        out.write(gz.flush())
    info = out.info
    return store.index.put_layer(info.digest, layer.diff_id, info.size, layer.diff_size, MEDIA_LAYER_GZIP)


def export_oci(store: Store, image: StoredImage, dest: str | os.PathLike[str], tags: Sequence[str] = (), *,
               compression: str = "gzip") -> None:
    """Write `image` as an OCI image layout in a tar at `dest`; `tags` become ref names in index.json.

    Layers are gzip by default (as BuildKit's exporter writes them, and every OCI tool reads);
    `compression="zstd"` keeps them as stored."""
    if compression == "zstd":
        layers = tuple(image.layers)
        manifest = read_blob(store, image.manifest_digest, "manifest")
    elif compression == "gzip":
        layers = tuple(gzip_variant(store, layer) for layer in image.layers)
        manifest = Manifest(
            config=image.manifest.config,
            layers=tuple(Descriptor(r.media_type, r.digest, r.size) for r in layers),
        ).to_json()
    else:
        raise UsageError(f"unknown compression {compression!r}", hint="use gzip or zstd")
    manifest_digest = sha256_digest(manifest)
    names = [split_tag(t)[1] for t in (tags or image.tags)] or [""]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {"mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": len(manifest),
             **({"annotations": {"org.opencontainers.image.ref.name": name}} if name else {})}
            for name in names
        ],
    }
    digests = sorted({image.config_digest, *(layer.digest for layer in layers)})
    with atomic_file(dest) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        _add_bytes(tar, f"blobs/sha256/{manifest_digest.split(':', 1)[1]}", manifest)
        for digest in digests:
            path = _blob(store, digest)
            with store.reading_blob(digest) as f:
                tar.addfile(_info(f"blobs/sha256/{digest.split(':', 1)[1]}", path.stat().st_size), f)
        _add_bytes(tar, "index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode())
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')


def export_docker(store: Store, image: StoredImage, dest: str | os.PathLike[str], tags: Sequence[str] = ()) -> None:
    """Write `image` in `docker save` format at `dest`: what `docker load -i` reads."""
    config = read_blob(store, image.config_digest, "config")
    config_name = image.config_digest.split(":", 1)[1] + ".json"
    layer_names = []
    with atomic_file(dest) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for layer in image.layers:
            hexid = layer.diff_id.split(":", 1)[1]
            _add_dir(tar, hexid)
            _add_bytes(tar, f"{hexid}/VERSION", b"1.0")
            _blob(store, layer.digest)
            with store.reading_blob(layer.digest) as blob:
                tar.addfile(_info(f"{hexid}/layer.tar", layer.diff_size), _uncompressed(blob))
            layer_names.append(f"{hexid}/layer.tar")
        _add_bytes(tar, config_name, config)
        repo_tags = list(tags or image.tags)
        manifest = [{"Config": config_name, "RepoTags": repo_tags or None, "Layers": layer_names}]
        _add_bytes(tar, "manifest.json", json.dumps(manifest, separators=(",", ":")).encode())


def _uncompressed(blob: BinaryIO) -> Any:
    """A reader of the tar inside a stored layer blob (zstd, gzip or plain)."""
    fmt = sniff_compression(_peek(blob, 4))
    if fmt == "zstd":
        # closefd=False: the blob stays open to be read to its end, where its digest is checked.
        return zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True, closefd=False)
    if fmt == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=blob, mode="rb")
    return blob


def _peek(blob: BinaryIO, n: int) -> bytes:
    """The first `n` bytes, left unread (a verifying reader hashes as it goes and cannot seek back)."""
    peek = getattr(blob, "peek", None)
    if peek is not None:
        return bytes(peek(n)[:n])
    head = blob.read(n)
    blob.seek(0)
    return head


def save(store: Store, image: StoredImage, dest: str | os.PathLike[str], fmt: str, tags: Sequence[str] = (),
         *, compression: str = "gzip") -> None:
    """`layerbuild save` / `--output type=oci|docker`."""
    if fmt == "oci":
        export_oci(store, image, dest, tags, compression=compression)
    elif fmt == "docker":
        export_docker(store, image, dest, tags)
    else:
        raise UsageError(f"unknown archive format {fmt!r}", hint="use docker or oci")
