"""Whether two images are the same to whoever runs them: the same files (path, type, mode, owner, size,
content, link target; not times) and the same config (env compared as the mapping it is, not in the
order of the ENV lines). What keeps a what-if from suggesting a rewrite that changes the image."""

from __future__ import annotations

import dataclasses
import hashlib
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    files: dict[str, tuple[Any, ...]]
    config: dict[str, Any]


def snapshot(root: Path, image_id: str) -> Snapshot:
    from layerbuild.image.export import export_tar
    from layerbuild.image.store_io import resolve_image
    from layerbuild.store import Store

    with Store.open(root) as store:
        stored = resolve_image(store, image_id)
        cfg = stored.config
        config = dataclasses.asdict(cfg.config)
        config["env"] = sorted(config["env"])
        config["os"], config["architecture"] = cfg.os, cfg.architecture
        with tempfile.TemporaryFile() as tmp:
            export_tar(store, stored, tmp)
            tmp.seek(0)
            return Snapshot(_files(tmp), config)


def _files(stream: Any) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name.rstrip("/").removeprefix("./")
            digest = ""
            if member.isfile():
                f = tar.extractfile(member)
                digest = hashlib.sha256(f.read() if f is not None else b"").hexdigest()
            out[name] = (member.type, member.mode, member.uid, member.gid, member.size if member.isfile() else 0,
                         member.linkname, digest)
    return out


def differences(a: Snapshot, b: Snapshot, limit: int = 3) -> list[str]:
    """What differs between `a` (the image as built) and `b` (the rewrite's), in words; [] when the same."""
    out = []
    for key in sorted(set(a.config) | set(b.config)):
        if a.config.get(key) != b.config.get(key):
            out.append(f"config {key}: {a.config.get(key)!r} → {b.config.get(key)!r}")
    for name in sorted(set(a.files) | set(b.files)):
        if a.files.get(name) != b.files.get(name):
            if name not in b.files:
                out.append(f"/{name} missing")
            elif name not in a.files:
                out.append(f"/{name} added")
            else:
                out.append(f"/{name} differs")
        if len(out) >= limit:
            break
    return out[:limit]
