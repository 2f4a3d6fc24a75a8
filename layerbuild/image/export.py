"""BuildKit's `local` and `tar` exporters: an image's final filesystem written to a directory or a tar.

`export_local` applies the layers in order (`layer.apply_layer`: whiteouts honoured, nothing written
outside the destination, owners and device nodes restored when running as root) into a staging
directory next to DEST, then moves the result into DEST. Like BuildKit it adds to what DEST already
holds and replaces entries of the same name, but whiteouts and opaque directories of the image only
ever remove image content, never files that were in DEST before. `export_tar` writes the same
filesystem as one deterministic tar (see `flatten`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.errors import DigestMismatchError, LayerbuildError, UsageError
from layerbuild.image.flatten import TarExport, write_flat_tar
from layerbuild.image.store_io import StoredImage
from layerbuild.image.storeimage import store_image
from layerbuild.layer import apply_layer
from layerbuild.store import Store


@dataclass(frozen=True)
class LocalExport:
    """What `export_local` wrote: the destination, entries applied, and entries skipped for lack of privilege."""

    dest: Path
    entries: int
    skipped: tuple[str, ...]
    devices_skipped: tuple[str, ...] = ()  # device nodes left out (not asked for with devices=True)


def export_local(store: Store, image: StoredImage, dest: str | os.PathLike[str], *,
                 devices: bool = False) -> LocalExport:
    """Write the image's final filesystem into the directory `dest` (created if missing).

    Device nodes of the image are left out unless `devices` (an image's 0666 node for a host disk
    would open it for anyone on the host); the staging directory is private until they are gone.
    """

    target = Path(os.path.abspath(dest))
    if target.exists() and not target.is_dir():
        raise UsageError(f"export destination {os.fspath(dest)!r} exists and is not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.layerbuild-", dir=target.parent))  # 0700
        staging = holder / "root"
        staging.mkdir()
    except OSError as exc:
        raise LayerbuildError(f"cannot create the export directory {os.fspath(dest)!r}: {exc}") from exc
    try:
        os.chmod(staging, 0o755)  # what the root gets unless a layer says otherwise
        entries = 0
        skipped: list[str] = []
        for layer in store_image(store, image).layers:
            with layer.compressed() as blob:
                result = apply_layer(blob, staging)
            if result.diff_id != layer.diff_id:
                raise DigestMismatchError(
                    f"layer blob {layer.digest} unpacks to {result.diff_id}, not {layer.diff_id}"
                )
            entries += result.entries
            skipped.extend(result.skipped)
        devices_skipped = () if devices else remove_device_nodes(staging)
        try:
            if target.exists():
                _merge(staging, target)
            else:
                os.rename(staging, target)
        except OSError as exc:
            raise LayerbuildError(f"cannot move the exported files into {os.fspath(dest)!r}: {exc}") from exc
    finally:
        if holder.exists():
            shutil.rmtree(holder, ignore_errors=True)
    return LocalExport(target, entries, tuple(skipped), devices_skipped)


def remove_device_nodes(root: Path) -> tuple[str, ...]:
    """Delete the character and block devices under `root` (never following links); their paths."""
    removed = []
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.unlink(path)
                removed.append("/" + os.path.relpath(path, root))
    return tuple(sorted(removed))


def _merge(src: Path, dst: Path) -> None:
    """Move the entries of `src` into `dst`: directories merge, anything else replaces what is there."""
    with os.scandir(src) as it:
        names = sorted(e.name for e in it)
    for name in names:
        s, d = src / name, dst / name
        s_st = os.lstat(s)
        try:
            d_st: os.stat_result | None = os.lstat(d)
        except FileNotFoundError:
            d_st = None
        if d_st is not None and stat.S_ISDIR(s_st.st_mode) and stat.S_ISDIR(d_st.st_mode):
            _merge(s, d)
            continue
        if d_st is not None:
            if stat.S_ISDIR(d_st.st_mode):
                shutil.rmtree(d)
            else:
                os.unlink(d)
        os.rename(s, d)
    _copy_dir_metadata(src, dst)


def _copy_dir_metadata(src: Path, dst: Path) -> None:
    st = os.lstat(src)
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A file written under a temp name beside `dest`, fsynced, made 0644 and renamed into place;
    a failure leaves nothing at `dest`."""
    target = Path(os.path.abspath(dest))
    if target.is_dir():
        raise UsageError(f"cannot write {os.fspath(dest)!r}: it is a directory", hint="give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        parent = next((p for p in target.parents if p.exists()), None)
        why = f"{str(parent)!r} is not a directory" if parent is not None and not parent.is_dir() else exc.strerror
        raise LayerbuildError(f"cannot write {os.fspath(dest)!r}: {why or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise LayerbuildError(f"cannot write {os.fspath(dest)!r}: {exc.strerror or exc}") from exc
        raise


def export_tar(store: Store, image: StoredImage, dest: str | os.PathLike[str] | BinaryIO) -> TarExport:
    """Write the image's final filesystem as an uncompressed tar to the file `dest` or an open stream.

    A file is written to a temp name beside it and renamed, so a failed export leaves no partial tar.
    """
    layers = store_image(store, image).layers
    if not isinstance(dest, str | os.PathLike):
        return write_flat_tar(store, layers, dest)
    with atomic_file(dest) as out:
        result = write_flat_tar(store, layers, out)
    return result
