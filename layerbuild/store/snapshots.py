"""Unpacked layers under `snapshots/<diff_id hex>/` (overlay lowerdirs): made once, disposable, rebuildable."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from layerbuild.errors import StoreError
from layerbuild.store import idmap
from layerbuild.store.layout import Layout, flocked, fsync_dir, random_name

Unpack = Callable[[Path], None]

_TMP_PREFIX = "snap-"


class Snapshots:
    """Snapshot directories, one per layer diff_id. Creation and removal hold a per-layer lock file."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, diff_id: str) -> Path:
        return self.layout.snapshot_path(diff_id)

    def exists(self, diff_id: str) -> bool:
        return self.path(diff_id).is_dir()

    def ensure(self, diff_id: str, unpack: Unpack) -> Path:
        """The snapshot of `diff_id`, calling `unpack(empty_dir)` to make it if it does not exist yet.

        `unpack` fills a fresh directory on the store's filesystem, which is renamed into place when it
        returns, so a snapshot is whole or absent. Concurrent callers for one layer: one unpacks, the
        others wait for the lock and then use its result. If `unpack` raises, nothing is left behind.
        """
        final = self.path(diff_id)
        if final.is_dir():
            return final
        with flocked(self.layout.snapshot_lock(diff_id)):
            if final.is_dir():
                return final
            work = self.layout.tmp / random_name(f"{_TMP_PREFIX}{final.name}-")
            work.mkdir(mode=0o755)
            try:
                unpack(work)
                os.rename(work, final)
            except BaseException:
                remove_tree(work)
                raise
            fsync_dir(final.parent)
        return final

    def remove(self, diff_id: str) -> bool:
        """Delete the snapshot of `diff_id` if present; True if something was removed."""
        final = self.path(diff_id)
        with flocked(self.layout.snapshot_lock(diff_id)):
            if not final.is_dir():
                return False
            # Rename first so the snapshot disappears at once; a half-deleted tree is never visible.
            doomed = self.layout.tmp / random_name(f"{_TMP_PREFIX}{final.name}-rm-")
            os.rename(final, doomed)
            remove_tree(doomed)
        return True

    def detach(self, diff_id: str) -> Path | None:
        """Move the snapshot of `diff_id` out of sight into the root's tmp/ and return where it went,
        for the caller to delete (remove_tree) later; None if absent or being made right now.

        Quick (one rename), so prune does it while it holds the index's write lock: a build that
        looks the layer up afterwards finds neither its rows nor its snapshot."""
        final = self.path(diff_id)
        with flocked(self.layout.snapshot_lock(diff_id), blocking=False) as got:
            if not got or not final.is_dir():
                return None
            doomed = self.layout.tmp / random_name(f"{_TMP_PREFIX}{final.name}-rm-")
            os.rename(final, doomed)
        return doomed

    def diff_ids(self) -> Iterator[str]:
        """The diff_ids that have a snapshot."""
        try:
            entries = list(os.scandir(self.layout.snapshots))
        except FileNotFoundError:
            return
        for entry in entries:
            if len(entry.name) == 64 and entry.is_dir(follow_symlinks=False):
                yield "sha256:" + entry.name

    def clean_orphans(self) -> list[Path]:
        """Remove temp trees left by crashed unpackers (those whose layer lock nobody holds)."""
        removed: list[Path] = []
        try:
            entries = list(os.scandir(self.layout.tmp))
        except FileNotFoundError:
            return removed
        for entry in entries:
            if not entry.name.startswith(_TMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            hexpart = entry.name[len(_TMP_PREFIX) : len(_TMP_PREFIX) + 64]
            if len(hexpart) != 64:
                continue
            with flocked(self.layout.snapshot_lock("sha256:" + hexpart), blocking=False) as got:
                if got and os.path.isdir(entry.path):
                    remove_tree(Path(entry.path))
                    removed.append(Path(entry.path))
        return removed

    def size(self, diff_id: str) -> int:
        return tree_size(self.path(diff_id))


def tree_size(path: Path) -> int:
    """Bytes used by the files under `path` (hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    denied: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(path, onerror=denied.append):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    if any(isinstance(e, PermissionError) for e in denied) and os.geteuid() != 0 and not idmap.current().single:
        return idmap.call_in_userns(tree_size, path)  # directories of subordinate ids (rootless)
    return total


def remove_tree(path: Path) -> None:
    """rmtree that also removes read-only directories an unpacked layer may contain."""

    def on_error(
        func: Callable[..., object], failed: str, exc_info: tuple[type, BaseException, object]
    ) -> None:
        exc = exc_info[1]
        if isinstance(exc, FileNotFoundError):
            return
        if isinstance(exc, PermissionError):
            parent = os.path.dirname(failed)
            try:
                os.chmod(parent, 0o700)
                if os.path.isdir(failed) and not os.path.islink(failed):
                    os.chmod(failed, 0o700)
                    shutil.rmtree(failed, onerror=on_error)
                else:
                    func(failed)
                return
            except OSError:
                pass
        raise StoreError(f"cannot remove {failed}: {exc}")

    if path.is_symlink() or not path.exists():
        return
    try:
        shutil.rmtree(path, onerror=on_error)
    except StoreError:
        # Rootless: a container's files owned by subordinate ids can only be removed from inside
        # the user namespace that maps them.
        if os.geteuid() == 0 or idmap.current().single:
            raise
        idmap.call_in_userns(remove_tree, path)
