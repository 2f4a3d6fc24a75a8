"""What the worker's tasks share (BuildServices), and the tasks of the two simplest op kinds:
ConfigEdit (nothing to do) and MakeDir (WORKDIR)."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.errors import BuildError, StoreError
from layerbuild.layer import ChangeSet, LayerInfo, write_changes
from layerbuild.layer.frames import ZSTD_LEVEL, Frame, Reuse
from layerbuild.plan import MakeDir
from layerbuild.solve import Content, Inputs, Output, State
from layerbuild.store import MEDIA_LAYER_ZSTD, Lease, Store
from layerbuild.store.idmap import call_in_userns, current, unmapped, view_owner
from layerbuild.store.layout import make_scratch
from layerbuild.worker.copyowner import NO_USERS, RootfsUserDB
from layerbuild.worker.rootfs import RootfsCache

if TYPE_CHECKING:
    from layerbuild.runtime.limits import Limits


class BuildServices:
    """What ops share during one build: the store, materialised filesystems, time settings, the RUN
    steps' resource limits."""

    def __init__(
        self,
        store: Store,
        rootfs: RootfsCache,
        base_layers: Callable[[State], tuple[str, ...]],
        source_date_epoch: int | None = None,
        limits: Limits | None = None,
        *,
        lease: Lease | None = None,
    ) -> None:
        self.store = store
        self.limits = limits  # of every RUN step's cgroup
        self.lease = lease
        self.rootfs = rootfs
        self.base_layers = base_layers
        self.source_date_epoch = source_date_epoch
        # Fills a new cache mount directory from an imported cache (id, path) → whether it did.
        self.restore_mount: Callable[[str, Path], bool] | None = None
        # Layers a step took from an imported cache and not downloaded yet: whether one is, and
        # bringing them in before their files are looked at (see worker.remotecache).
        self.pending_layer: Callable[[str], bool] | None = None
        self.ensure_layers: Callable[[tuple[str, ...]], None] | None = None
        self._janitor: threading.Thread | None = None
        self._litter: list[Path] = []
        self._litter_lock = threading.Lock()

    def discard_later(self, path: Path) -> None:
        """Remove the scratch dir `path` off the step's critical path (a thread of its own); `settle`
        waits for every such removal, before the build ends."""
        with self._litter_lock:
            self._litter.append(path)
            if self._janitor is None or not self._janitor.is_alive():
                self._janitor = threading.Thread(target=self._sweep, name="scratch-janitor")
                self._janitor.start()

    def _sweep(self) -> None:
        from layerbuild.store.snapshots import remove_tree

        while True:
            with self._litter_lock:
                if not self._litter:
                    self._janitor = None
                    return
                path = self._litter.pop()
            with contextlib.suppress(StoreError, OSError):  # best effort; the next command cleans tmp
                remove_tree(path)

    def settle(self) -> None:
        """Wait for the scratch dirs given to `discard_later` to be removed."""
        while True:
            with self._litter_lock:
                janitor = self._janitor
            if janitor is None:
                return
            janitor.join()

    def need_layers(self, diff_ids: tuple[str, ...]) -> None:
        """Before the files of `diff_ids` are read: those still at an imported cache brought in."""
        if self.ensure_layers is not None:
            self.ensure_layers(diff_ids)

    def reuse_from(self, output: Output | None) -> Reuse | None:
        """The frames of a layer the step made before (its last build), for an edit to build on: from
        the layer's recipe (with the digests' saved states), else from the record (older stores)."""
        if output is None or not output.extra.get("blob"):
            return None
        if output.extra.get("zstd_level", 3) != ZSTD_LEVEL:  # (3: the level of layers made before it was kept)
            return None  # frames of another level: the new blob would differ from one made afresh
        blob = str(output.extra["blob"])
        try:
            recipe = self.store.blobs.recipe(blob)
            if recipe is not None:
                frames = tuple(Frame(f.key, f.raw, f.offset, f.size, f.pack, bytes.fromhex(f.tar_state),
                                     bytes.fromhex(f.blob_state), f.mkey) for f in recipe.frames)
                packs = {p: str(self.store.blobs.path(p)) for p in recipe.packs}
                reuse = Reuse(str(self.store.blobs.path(blob)), frames, packs,
                              bytes.fromhex(recipe.end_tar_state), bytes.fromhex(recipe.end_blob_state))
            elif output.extra.get("frames"):
                frames = tuple(replace(Frame.from_json(f), pack=blob) for f in output.extra["frames"])
                packs = {blob: str(self.store.blobs.path(blob))}
                reuse = Reuse(packs[blob], frames, packs)
            else:
                return None
        except (TypeError, ValueError, StoreError):
            return None
        if self.lease is not None:  # read from now on, and named by the new layer's recipe: held
            self.lease.add(*sorted(packs))
        return reuse

    def filesystem(self, state: State) -> Path:
        """The directory holding `state`'s filesystem (made on first use in this build)."""
        diff_ids = (*self.base_layers(state), *state.layers)
        self.need_layers(diff_ids)
        return self.rootfs.get(state.result, diff_ids)

    def has_layers(self, state: State) -> bool:
        return bool(self.base_layers(state) or state.layers)

    def store_layer(self, write: Callable[[Any], LayerInfo], *, frames: bool = False) -> Output:
        """Write a layer through `write(out)` into the store and register it; the step's Output.

        `frames`: the layer's frames are recorded (its recipe), for the step's next build to reuse,
        and `write` may leave frames it took from an earlier layer out of `out` (pack_only)."""
        for _ in range(3):
            with self.store.blobs.writer() as out:
                info = write(out)
            if info.frames and (frames or out.info.digest != info.digest):
                self._put_recipe(info, out.info.digest)
            self.store.index.put_layer(
                info.digest, info.diff_id, info.size, info.uncompressed_size, info.media_type
            )
            if self.lease is None:
                break
            # Held before the step's cache record points at it; a prune that came between the put
            # and the lease (only possible with a grace period of about nothing) took it: write again.
            self.lease.add(info.digest, info.diff_id)
            if self.store.blobs.stat(info.digest) is not None and self.store.index.get_layer(info.digest):
                break
        extra: dict[str, object] = {}
        if info.frames and frames:  # the frames themselves are in the layer's recipe
            extra = {"blob": info.digest, "reused": info.reused, "zstd_level": ZSTD_LEVEL}
        return Output(diff_id=info.diff_id, size=info.size, created=self.now(), extra=extra)

    def _put_recipe(self, info: LayerInfo, written: str) -> None:
        """Record the frames of the zstd layer `info`: frames without a pack are in the blob just
        written (`written`), which is the layer's whole blob unless frames were kept in older packs."""
        from layerbuild.store.chunks import Recipe, RecipeFrame

        recipe = Recipe(info.digest, info.diff_id, info.size, info.uncompressed_size, info.media_type,
                        tuple(RecipeFrame(f.pack or written, f.offset, f.size, f.raw, f.key, f.tar_state.hex(),
                                          f.blob_state.hex(), f.mkey) for f in info.frames),
                        info.end_tar_state.hex(), info.end_blob_state.hex())
        if recipe.packs == {written} and written != info.digest:
            raise StoreError(f"layer blob {written} does not hash to {info.digest} as its frames do")
        self.store.blobs.put_recipe(recipe)

    def now(self) -> float:
        return float(self.source_date_epoch) if self.source_date_epoch is not None else time.time()

    def usable(self, output: Output) -> bool:
        if output.diff_id is None or (self.pending_layer is not None and self.pending_layer(output.diff_id)):
            return True
        return bool(self.store.present_layers(output.diff_id))


class ConfigTask:
    """A config-only op (ENV, LABEL, CMD, ...): nothing to run; the image assembly applies it."""

    def content(self) -> Content | None:
        return None

    def run(self, previous: Output | None) -> Output:
        # The step's own time, kept in its cache record: history shows when the step was made, and a
        # cached rebuild reads the same time back, so the image id stays the same.
        return Output(created=time.time())

    def close(self) -> None:
        pass


class MakeDirTask:
    """WORKDIR: makes the directory (and missing parents) when the filesystem lacks it."""

    def __init__(self, services: BuildServices, op: MakeDir, inputs: Inputs) -> None:
        self.services = services
        self.path = op.path
        self.epoch = op.source_date_epoch
        self.user = op.user
        self.parent = inputs.parent

    def content(self) -> Content | None:
        return None

    def close(self) -> None:
        pass

    def run(self, previous: Output | None) -> Output:
        parent = self.parent
        parts = [p for p in self.path.split("/") if p]
        if not parts:
            return Output()
        lower = self.services.filesystem(parent) if self.services.has_layers(parent) else None
        if lower is not None:
            target = lower.joinpath(*parts)
            if target.is_dir() and not target.is_symlink():
                # Already there: an empty layer, as BuildKit's mkdir op gives one for every WORKDIR but `/`.
                with _scratch(self.services.store) as tmp:
                    return self.services.store_layer(
                        lambda out: write_changes(tmp, ChangeSet(), out, source_date_epoch=self.epoch))
        with _scratch(self.services.store) as tmp:
            # Parents that exist below keep their metadata in this layer (as an overlay upper dir
            # would carry them); the directories made here are 0755, owned by the USER in effect,
            # dated at the epoch.
            uid, gid = _mkdir_owner(self.user, lower)
            if os.geteuid() != 0 and (uid, gid) != (0, 0) and not current().has(uid, gid):
                raise unmapped(f"WORKDIR {self.path} as USER {self.user}", uid, gid)
            created: list[Path] = []
            kept: list[tuple[Path, os.stat_result, Path | None]] = []
            here, there = Path(tmp), lower
            for i, part in enumerate(parts):
                here = here / part
                there = there / part if there is not None else None
                here.mkdir()
                if there is not None and os.path.lexists(there):
                    st = os.lstat(there)
                    if not stat.S_ISDIR(st.st_mode):
                        where = "/" + "/".join(parts[: i + 1])
                        raise BuildError(f"WORKDIR {self.path}: {where} exists and is not a directory")
                    kept.append((here, st, there))
                else:
                    os.chmod(here, 0o755)
                    created.append(here)
            owners: list[tuple[Path, int, int]] = []  # rootless: set inside the user namespace
            for path, st, seen in reversed(kept):
                os.chmod(path, stat.S_IMODE(st.st_mode))
                if os.geteuid() == 0:
                    os.chown(path, st.st_uid, st.st_gid)
                elif seen is not None:
                    owners.append((path, *view_owner(os.fspath(seen), st)))
                os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns))
            for path in reversed(created):
                if (uid, gid) != (0, 0):
                    if os.geteuid() == 0:
                        os.chown(path, uid, gid)
                    else:
                        owners.append((path, uid, gid))
                os.utime(path, ns=(0, 0))
            changes = ChangeSet(changed=tuple(str(p.relative_to(tmp)) for p in created))
            epoch = self.epoch
            if os.geteuid() != 0:  # written in the user namespace: the caller's files are root's there
                return self.services.store_layer(
                    lambda out: call_in_userns(_write_dirs, Path(tmp), changes, epoch, owners, sink=out)
                )
            return self.services.store_layer(
                lambda out: write_changes(tmp, changes, out, source_date_epoch=epoch)
            )


def _mkdir_owner(user: str, lower: Path | None) -> tuple[int, int]:
    """(uid, gid) of WORKDIR's new directories, as BuildKit's mkdir resolves `llb.WithUser(USER)`: a
    number alone is uid and gid; a name its passwd entry; a group its /etc/group entry or number. A
    name the image does not know leaves the id at 0, as BuildKit does (a RUN would refuse it)."""
    name, _, group = user.partition(":")
    if not name:
        return 0, 0
    db = RootfsUserDB(lower) if lower is not None else NO_USERS
    if name.isdigit():
        uid = gid = int(name)
    else:
        uid, gid = db.user(name) or (0, 0)
    if group:
        found = int(group) if group.isdigit() else db.group(group)
        gid = gid if found is None else found
    return uid, gid


def _write_dirs(out: Any, tmp: Path, changes: ChangeSet, epoch: int | None,
                owners: list[tuple[Path, int, int]]) -> LayerInfo:
    try:
        for path, uid, gid in owners:
            os.chown(path, uid, gid)
        return write_changes(tmp, changes, out, source_date_epoch=epoch)
    finally:  # back to the caller, who removes the scratch dir
        for path, _, _ in owners:
            os.chown(path, 0, 0)


@contextlib.contextmanager
def _scratch(store: Store) -> Iterator[str]:
    """A scratch directory under the root's tmp/ that the next command removes if this one dies."""
    path = make_scratch(store.layout.tmp, "workdir-")
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["MEDIA_LAYER_ZSTD", "BuildServices", "ConfigTask", "MakeDirTask"]
