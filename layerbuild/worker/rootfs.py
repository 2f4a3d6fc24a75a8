"""A build state's filesystem, made on demand, read-only: a view of its layers for steps that look.

Steps that must look at a filesystem (COPY --from reads files of another stage, --chown names are
looked up in /etc/passwd, WORKDIR and COPY need to know which directories exist) ask for it here.
As root it is a read-only overlay mount of the layers' snapshots (instant, nothing copied); otherwise
the layers are applied in order into a scratch directory. Each distinct state is made at most once
per build, and unmounted or removed when the build ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import threading
from pathlib import Path

from layerbuild.errors import StoreError
from layerbuild.layer import apply_layer
from layerbuild.store import Store
from layerbuild.store.snapshots import remove_tree


class RootfsCache:
    """Materialised filesystems of layer stacks, keyed by the stack's identity."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dirs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        tmp = store.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self._base = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tmp))
        self._mounts: list[Path] = []

    def get(self, identity: str, diff_ids: tuple[str, ...]) -> Path:
        """The directory holding `diff_ids` applied in order (made now if this build has not yet)."""
        with self._lock:
            lock = self._locks.setdefault(identity, threading.Lock())
        with lock:
            if identity in self._dirs:
                return self._dirs[identity]
            target = self._base / identity[:32]
            target.mkdir()
            if not self._mount(diff_ids, target):
                for diff_id in diff_ids:
                    self._apply(diff_id, target)
            self._dirs[identity] = target
            return target

    def _mount(self, diff_ids: tuple[str, ...], target: Path) -> bool:
        """A read-only overlay of the layer snapshots at `target`; False where that cannot be done."""
        if os.geteuid() != 0 or len(diff_ids) < 2 or os.environ.get("LAYERBUILD_ROOTFS") == "copy":
            return False
        from layerbuild.runtime import lower_dirs_for

        lowers = lower_dirs_for(self.store, diff_ids)
        option = "ro,lowerdir=" + ":".join(str(p) for p in reversed(lowers))
        if len(option) > 3500 or any(":" in str(p) or "," in str(p) for p in lowers):
            return False  # the kernel takes one page of mount options
        done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", option, str(target)],
                              capture_output=True, check=False)
        if done.returncode != 0:
            return False
        self._mounts.append(target)
        return True

    def _apply(self, diff_id: str, target: Path) -> None:
        records = self.store.index.layers_by_diff_id(diff_id)
        if not records:
            raise StoreError(f"layer {diff_id} is not in the store", hint="run `layerbuild fsck`")
        with self.store.open_blob(records[0].digest) as blob:
            apply_layer(blob, target, record_owners=os.geteuid() != 0)

    def close(self) -> None:
        """Unmount the views and remove every directory made (read-only directories included).

        A view that will not unmount is left in place rather than risk deleting through it."""
        stuck = []
        for target in self._mounts:
            if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode != 0 and \
                    subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False).returncode != 0:
                stuck.append(target)
        self._mounts.clear()
        if stuck:
            return
        with contextlib.suppress(StoreError):
            remove_tree(self._base)
