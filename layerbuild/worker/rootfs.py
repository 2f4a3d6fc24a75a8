"""A build state's filesystem, made on demand, read-only: a view of its layers for steps that look.

Steps that must look at a filesystem (COPY --from reads files of another stage, --chown names are
looked up in /etc/passwd, WORKDIR and COPY need to know which directories exist) ask for it here.
As root it is a read-only overlay mount of the layers' snapshots (instant, nothing copied), made in
a private mount namespace that a helper process owns (worker/mountns.py) and read through
`/proc/<helper>/root`: it dies with the build, however the build ends, and takes the mounts with it.
Otherwise the layers are applied in order into a scratch directory. Each distinct state is made at
most once per build; the scratch directory carries its owner (store.layout.make_scratch), so the
next command removes it when a killed build could not.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from layerbuild.errors import StoreError
from layerbuild.layer import apply_layer
from layerbuild.store import Store
from layerbuild.store.layout import make_scratch
from layerbuild.store.snapshots import remove_tree


class RootfsCache:
    """Materialised filesystems of layer stacks, keyed by the stack's identity."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._dirs: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._base = make_scratch(store.layout.tmp, "rootfs-")
        self._helper: subprocess.Popen[bytes] | None = None
        self._helper_failed = False  # also set by close(): no helper is started after it

    def get(self, identity: str, diff_ids: tuple[str, ...]) -> Path:
        """The directory holding `diff_ids` applied in order (made now if this build has not yet)."""
        with self._lock:
            lock = self._locks.setdefault(identity, threading.Lock())
        with lock:
            if identity in self._dirs:
                return self._dirs[identity]
            target = self._base / identity[:32]
            target.mkdir()
            view = self._mount(diff_ids, target)
            if view is None:
                for diff_id in diff_ids:
                    self._apply(diff_id, target)
                view = target
            self._dirs[identity] = view
            return view

    def _mount(self, diff_ids: tuple[str, ...], target: Path) -> Path | None:
        """A read-only overlay of the layer snapshots at `target` in the helper's namespace, as the
        path this process reads it by; None where that cannot be done."""
        if os.geteuid() != 0 or not diff_ids or os.environ.get("LAYERBUILD_ROOTFS") == "copy":
            return None
        from layerbuild.runtime import lower_dirs_for

        lowers = lower_dirs_for(self.store, diff_ids)
        if len(lowers) == 1:  # overlay wants two lower dirs without an upper: one snapshot is bound as it is
            if any(c in str(lowers[0]) for c in "\t\n"):
                return None
            request = b"bind\t%s\t%s\n" % (os.fsencode(target), os.fsencode(lowers[0]))
        else:
            option = "lowerdir=" + ":".join(str(p) for p in reversed(lowers))
            if len(option) > 3500 or any(c in str(p) for p in lowers for c in ":,\t\n"):
                return None  # the kernel takes one page of mount options
            request = b"mount\t%s\t%s\n" % (os.fsencode(target), os.fsencode(option))
        if "\t" in str(target) or "\n" in str(target):
            return None
        with self._lock:
            helper = self._start_helper()
            if helper is None:
                return None
            assert helper.stdin is not None and helper.stdout is not None
            try:
                helper.stdin.write(request)
                helper.stdin.flush()
                answer = helper.stdout.readline()
            except OSError:
                answer = b""
        if answer != b"ok\n":
            return None
        return Path(f"/proc/{helper.pid}/root") / target.relative_to("/")

    def prestart(self) -> None:
        """Start the helper now, in the background, where views will be made (as root): its
        interpreter then starts while the build's first steps run, not when a step first looks."""
        if os.geteuid() != 0 or os.environ.get("LAYERBUILD_ROOTFS") == "copy":
            return

        def start() -> None:
            with self._lock:
                self._start_helper()

        threading.Thread(target=start, name="rootfs-helper", daemon=True).start()

    def _start_helper(self) -> subprocess.Popen[bytes] | None:
        """The helper that owns this build's mount namespace (started on first use); None if it
        cannot be (then views are copies)."""
        if self._helper is not None or self._helper_failed:
            return self._helper
        argv = [sys.executable, "-I", "-S", str(_HELPER), str(os.getpid())]
        if threading.current_thread() is threading.main_thread():
            argv.append("pdeathsig")
        try:
            helper = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        except OSError:
            self._helper_failed = True
            return None
        assert helper.stdout is not None
        if helper.stdout.readline() != b"ready\n":
            _stop(helper)
            self._helper_failed = True
            return None
        self._helper = helper
        return helper

    def _apply(self, diff_id: str, target: Path) -> None:
        records = self.store.index.layers_by_diff_id(diff_id)
        if not records:
            raise StoreError(f"layer {diff_id} is not in the store", hint="run `layerbuild fsck`")
        with self.store.reading_blob(records[0].digest) as blob:
            apply_layer(blob, target, record_owners=os.geteuid() != 0)

    def close(self) -> None:
        """End the helper (its namespace and mounts go with it) and remove every directory made
        (read-only directories included)."""
        with self._lock:  # a helper being started (prestart) is there once the lock is free
            helper, self._helper, self._helper_failed = self._helper, None, True
        if helper is not None:
            _stop(helper)
        with contextlib.suppress(StoreError):
            remove_tree(self._base)


_HELPER = Path(__file__).with_name("mountns.py")


def _stop(helper: subprocess.Popen[bytes]) -> None:
    """Close the helper's stdin (it exits on EOF) and reap it."""
    with contextlib.suppress(OSError):
        if helper.stdin is not None:
            helper.stdin.close()
    try:
        helper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    if helper.stdout is not None:
        helper.stdout.close()
