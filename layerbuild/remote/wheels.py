"""Wheels of what is installed here: layerbuild itself (also from a source checkout) and its dependencies,
repacked from the installed files, so a host can install the very same versions without an index."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import importlib.util
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError

_SKIP_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "SOURCES.txt", "dependency_links.txt",
              "PKG-INFO", "requires.txt"}


class WheelError(LayerbuildError):
    """An installed distribution could not be repacked."""


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    path: Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _tag(dist: metadata.Distribution) -> str:
    text = dist.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags if t.count("-") == 2]
    # One file name for every tag the installed wheel had: each part joined with dots (PEP 425 compression).
    return "-".join(".".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write(dest: Path, name: str, version: str, tag: str, files: Iterator[tuple[str, bytes]],
           info: dict[str, bytes]) -> Path:
    stem = f"{_norm(name)}-{version}"
    path = dest / f"{stem}-{tag}.whl"
    info_dir = f"{stem}.dist-info"
    records: list[str] = []
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files:
            zf.writestr(arcname, data)
            records.append(_record_line(arcname, data))
        for fname, data in info.items():
            zf.writestr(f"{info_dir}/{fname}", data)
            records.append(_record_line(f"{info_dir}/{fname}", data))
        records.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    os.replace(tmp, path)
    return path


def _package_files(root: Path, prefix: str) -> Iterator[tuple[str, bytes]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fname in sorted(filenames):
            if fname.endswith((".pyc", ".pyo")):
                continue
            full = Path(dirpath) / fname
            yield prefix + full.relative_to(root).as_posix(), full.read_bytes()


def layerbuild_wheel(dest: Path) -> Wheel:
    """A wheel of the layerbuild running here (a source checkout's files or an installed wheel's)."""
    from layerbuild import __version__

    spec = importlib.util.find_spec("layerbuild")
    grammar = importlib.util.find_spec("layerbuild.grammar")
    if spec is None or not spec.submodule_search_locations or grammar is None or not grammar.submodule_search_locations:
        raise WheelError("cannot find the files of the installed layerbuild")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    grammar_dir = Path(next(iter(grammar.submodule_search_locations)))

    def files() -> Iterator[tuple[str, bytes]]:
        for arcname, data in _package_files(pkg, "layerbuild/"):
            if not arcname.startswith("layerbuild/grammar/"):
                yield arcname, data
        yield from _package_files(grammar_dir, "layerbuild/grammar/")

    try:
        dist = metadata.distribution("layerbuild")
        meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        entry_points = dist.read_text("entry_points.txt")
    except metadata.PackageNotFoundError:
        meta, entry_points = "", None
    if not meta:
        raise WheelError("layerbuild's package metadata is missing", hint="install it with pip (pip install -e .)")
    meta = re.sub(r"(?m)^Version: .*$", f"Version: {__version__}", meta, count=1)
    info = {"METADATA": meta.encode(), "WHEEL": b"Wheel-Version: 1.0\nGenerator: layerbuild\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    if entry_points:
        info["entry_points.txt"] = entry_points.encode()
    return Wheel("layerbuild", __version__, _write(dest, "layerbuild", __version__, "py3-none-any", files(), info))


def _requirement_name(req: str) -> str | None:
    """The distribution a Requires-Dist line names, or None when it only applies to an extra."""
    if "extra ==" in req or "extra==" in req:
        return None
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return match.group(1) if match else None


def dependency_wheels(dest: Path, root: str = "layerbuild") -> list[Wheel]:
    """Wheels of every installed distribution `root` needs (transitively; extras left out), repacked
    from the installed files. A requirement that is not installed here does not apply here (its marker
    is false) and is left out."""
    seen: set[str] = {_norm(root)}
    todo = list(metadata.distribution(root).requires or [])
    out: list[Wheel] = []
    while todo:
        name = _requirement_name(todo.pop())
        if name is None or _norm(name) in seen:
            continue
        seen.add(_norm(name))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out.append(_repack(dist, dest))
        todo.extend(dist.requires or [])
    return out


def _repack(dist: metadata.Distribution, dest: Path) -> Wheel:
    name, version = dist.metadata["Name"], dist.version
    if not dist.files:
        raise WheelError(f"cannot repack {name} {version}: its installed files are not listed",
                         hint="let the host install the dependencies from its package index")
    base = Path(str(dist.locate_file("")))
    info: dict[str, bytes] = {}
    payload: list[tuple[str, bytes]] = []
    for item in dist.files:
        rel = item.as_posix()
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        full = base / rel
        if not full.is_file():
            continue
        top = rel.split("/", 1)[0]
        if top.endswith(".dist-info"):
            sub = rel.split("/", 1)[1]
            if sub not in _SKIP_INFO:
                info[sub] = full.read_bytes()
            continue
        payload.append((rel, full.read_bytes()))
    info.setdefault("WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {_tag(dist)}\n".encode())
    return Wheel(name, version, _write(dest, name, version, _tag(dist), iter(payload), info))
