"""What a service mounts: named volumes (`<root>/volumes/<project>_<volume>/_data`, filled from the
image when new), anonymous volumes (`<root>/volumes/<id>/_data`, per container, inherited by a
recreated one), bind mounts, tmpfs mounts, and its secrets and configs (bound from their files, or
copies under `<root>/compose/<project>/files/<container>/`), all kept under the store root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from layerbuild.compose.model import Project
from layerbuild.errors import ComposeFileError
from layerbuild.runtime.spec import BindMount, TmpfsMount

PROJECT = "com.docker.compose.project"
VOLUMES = "volumes"
ANONYMOUS = "anonymous.json"  # in an anonymous volume's directory: its project, container and target


def volume_name(project: Project, key: str) -> str:
    conf = project.volumes.get(key) or {}
    return str(conf.get("name") or f"{project.name}_{key}")


def volume_dir(root: Path, name: str) -> Path:
    return root / VOLUMES / name / "_data"


def service_mounts(root: Path, project: Project, svc: dict[str, Any], container: str
            ) -> tuple[tuple[BindMount | TmpfsMount, ...], tuple[tuple[Path, str], ...]]:
    """The service's mounts, and the volumes among them made just now that the image's content at
    their target fills (docker's copy-up; `volume.nocopy` opts out)."""
    out: list[BindMount | TmpfsMount] = []
    fills: list[tuple[Path, str]] = []
    for v in svc.get("volumes") or []:
        kind, target = v.get("type"), v["target"]
        readonly = bool(v.get("read_only"))
        if kind == "tmpfs":
            tmpfs = v.get("tmpfs") or {}
            mode = tmpfs.get("mode")
            out.append(TmpfsMount(target, byte_size(tmpfs.get("size")),
                                  0o1777 if mode is None else int(str(mode), 8) if isinstance(mode, str) else mode))
        elif kind == "bind":
            source = Path(v["source"])
            if not source.exists() and (v.get("bind") or {}).get("create_host_path", True):
                source.mkdir(parents=True, exist_ok=True)
            out.append(BindMount(source, target, readonly=readonly))
        elif kind == "volume":
            source = v.get("source")
            if not source:  # an anonymous volume: this container's own (its predecessor's, recreated)
                path, fresh = anonymous_volume(root, project, container, target)
                if not fresh:
                    out.append(BindMount(path, target, readonly=readonly))
                    continue
            elif source not in project.volumes:
                raise ComposeFileError(f"service refers to undefined volume {source}",
                                       hint="declare it under the top-level volumes:")
            else:
                path = volume_dir(root, volume_name(project, source))
                if path.exists():  # an existing volume keeps what it holds
                    out.append(BindMount(path, target, readonly=readonly))
                    continue
                path.mkdir(parents=True, exist_ok=True)
            if not (v.get("volume") or {}).get("nocopy"):
                fills.append((path, target))
            out.append(BindMount(path, target, readonly=readonly))
        else:
            raise ComposeFileError(f"volume type {kind} is not supported", hint="use volume, bind or tmpfs")
    for item in svc.get("tmpfs") or []:
        target, _, options = str(item).partition(":")
        size, mode = None, 0o1777
        for option in (o for o in options.split(",") if o):
            key, _, value = option.partition("=")
            if key == "size":
                size = byte_size(value)
            elif key == "mode":
                mode = int(value, 8)
        out.append(TmpfsMount(target, size, mode))
    out.extend(_file_mounts(root, project, svc, container))
    return tuple(out), tuple(fills)


FILES = "files"  # under <root>/compose/<project>/: the secrets' and configs' copies, per container


def files_dir(root: Path, project: str, container: str) -> Path:
    return root / "compose" / project / FILES / container


def _file_mounts(root: Path, project: Project, svc: dict[str, Any], container: str) -> list[BindMount]:
    """The service's `secrets:` (at /run/secrets/<name> unless `target` says otherwise) and `configs:`
    (at /<name>), read-only. A `file:` source without uid, gid or mode is bound as it is, as docker
    compose binds it; anything else (`environment:`, `content:`, or ownership and mode asked) is a
    copy made for this container with them (default: root, 0444)."""
    out = []
    for kind in ("secrets", "configs"):
        table = project.secrets if kind == "secrets" else project.configs
        for ref in svc.get(kind) or []:
            name = str(ref["source"])
            spec = table.get(name) or {}
            target = str(ref.get("target") or name)
            if not target.startswith("/"):
                target = f"/run/secrets/{target}" if kind == "secrets" else f"/{target}"
            what = f"{kind[:-1]} {name}"
            if spec.get("external"):
                raise ComposeFileError(f"{what} is external: external {kind} need a swarm",
                                       hint="give it a file:, environment: or content: source")
            custom = any(ref.get(k) is not None for k in ("uid", "gid", "mode"))
            if "file" in spec:
                source = Path(spec["file"])
                if not source.exists():
                    raise ComposeFileError(f"{what}: the file {source} does not exist")
                if not custom:
                    out.append(BindMount(source, target, readonly=True))
                    continue
                data = source.read_bytes()
            elif "environment" in spec:
                value = project.environment.get(str(spec["environment"]))
                if value is None:
                    raise ComposeFileError(f"{what}: the environment variable {spec['environment']} is not set")
                data = value.encode()
            elif "content" in spec and kind == "configs":
                data = str(spec["content"]).encode()
            else:
                raise ComposeFileError(f"{what} has no source", hint="give it a file: or environment: source")
            mode = ref.get("mode")
            mode = 0o444 if mode is None else int(mode, 8) if isinstance(mode, str) else int(mode)
            copy = files_dir(root, project.name, container) / kind / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            tmp = copy.with_name(copy.name + ".tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, mode)
            _chown(tmp, int(ref.get("uid") or 0), int(ref.get("gid") or 0))
            os.replace(tmp, copy)
            out.append(BindMount(copy, target, readonly=True))
    return out


def _chown(path: Path, uid: int, gid: int) -> None:
    """Owned by uid:gid as the container sees them (rootless: through the user namespace's mapping)."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    elif uid or gid:
        from layerbuild.store import idmap

        idmap.call_in_userns(os.chown, os.fspath(path), uid, gid)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def byte_size(value: Any) -> int | None:
    """A compose size (`64m`, `1gb`, `1024`: bytes) in bytes."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    m = _SIZE.fullmatch(str(value).strip())
    if m is None:
        raise ComposeFileError(f"invalid size {value!r}", hint="write e.g. 64m, 1g or a number of bytes")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index((m.group(2) or "b").lower()))


def anonymous_volume(root: Path, project: Project, container: str, target: str) -> tuple[Path, bool]:
    """The anonymous volume of `container` at `target` (and whether it is new): the one a container
    of that name left when it was recreated (docker compose's inheritance), else a new one,
    `<root>/volumes/<random id>/_data`, with a record of whose it is (so `down -v` and `run --rm`
    find it)."""
    import secrets

    for vdir, meta in _anonymous(root):
        if meta.get(PROJECT) == project.name and meta.get("container") == container and meta.get("target") == target:
            return vdir / "_data", False
    vdir = root / VOLUMES / secrets.token_hex(32)
    (vdir / "_data").mkdir(parents=True)
    _write_json(vdir / ANONYMOUS, {PROJECT: project.name, "container": container, "target": target})
    return vdir / "_data", True


def _anonymous(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    try:
        entries = list(os.scandir(root / VOLUMES))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            out.append((Path(entry.path), json.loads(Path(entry.path, ANONYMOUS).read_text())))
        except (OSError, ValueError):
            continue
    return out


def orphan_anonymous(root: Path, project: str, container: str) -> None:
    """The anonymous volumes of a container that is gone for good (`down`, scaled away, `up -V`) stay
    (until `down -v`) but are nobody's: a later container of that name gets new ones."""
    for vdir, meta in _anonymous(root):
        if meta.get(PROJECT) == project and meta.get("container") == container:
            _write_json(vdir / ANONYMOUS, {**meta, "container": ""})


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def remove_anonymous(root: Path, project: str, container: str | None = None) -> list[str]:
    """Remove the project's anonymous volumes (only `container`'s, if given); their ids."""
    removed = []
    for vdir, meta in _anonymous(root):
        if meta.get(PROJECT) == project and container in (None, meta.get("container")):
            shutil.rmtree(vdir, ignore_errors=True)
            removed.append(vdir.name)
    return removed


def remove_volumes(root: Path, project: Project) -> list[str]:
    removed = []
    for key, conf in project.volumes.items():
        if (conf or {}).get("external"):
            continue
        path = root / VOLUMES / volume_name(project, key)
        if path.exists():
            shutil.rmtree(path)
            removed.append(volume_name(project, key))
    return removed + remove_anonymous(root, project.name)
