"""The solver's Ops for each kind of step: config-only, WORKDIR, COPY/ADD and RUN."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from layerbuild.errors import BuildError
from layerbuild.instructions import commands as c
from layerbuild.layer import ChangeSet, LayerInfo, write_changes
from layerbuild.layer.frames import Frame, Reuse
from layerbuild.plan import Step
from layerbuild.solve import Cache, Content, History, Output, State
from layerbuild.store import MEDIA_LAYER_ZSTD, Store
from layerbuild.worker.rootfs import RootfsCache


class BuildServices:
    """What ops share during one build: the store, materialised filesystems, time settings."""

    def __init__(
        self,
        store: Store,
        rootfs: RootfsCache,
        base_layers: Callable[[State], tuple[str, ...]],
        source_date_epoch: int | None = None,
        previous: History | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.store = store
        self.rootfs = rootfs
        self.base_layers = base_layers
        self.source_date_epoch = source_date_epoch
        self.previous = previous
        self.cache = cache
        # Called with (step, line) for each line a RUN prints, when someone is listening.
        self.log: Callable[[Step, str], None] | None = None

    def reuse_for(self, stage: str, index: int) -> Reuse | None:
        """The frames of the layer this step made in the last build, for an edit to build on."""
        if self.previous is None or self.cache is None:
            return None
        record = self.previous.get((stage, index))
        if record is None or record.input is None:
            return None
        output = self.cache.get(record.input)
        if output is None or not output.extra.get("frames") or not output.extra.get("blob"):
            return None
        try:
            frames = tuple(Frame.from_json(f) for f in output.extra["frames"])
            return Reuse(str(self.store.blobs.path(str(output.extra["blob"]))), frames)
        except (TypeError, ValueError):
            return None

    def filesystem(self, state: State) -> Path:
        """The directory holding `state`'s filesystem (made on first use in this build)."""
        return self.rootfs.get(state.result, (*self.base_layers(state), *state.layers))

    def has_layers(self, state: State) -> bool:
        return bool(self.base_layers(state) or state.layers)

    def store_layer(self, write: Callable[[Any], LayerInfo]) -> Output:
        """Write a layer through `write(out)` into the store and register it; the step's Output."""
        with self.store.blobs.writer() as out:
            info = write(out)
        self.store.index.put_layer(
            info.digest, info.diff_id, info.size, info.uncompressed_size, info.media_type
        )
        extra: dict[str, object] = {}
        if info.frames:
            extra = {"blob": info.digest, "frames": [f.to_json() for f in info.frames], "reused": info.reused}
        return Output(diff_id=info.diff_id, size=info.size, created=self.now(), extra=extra)

    def now(self) -> float:
        return float(self.source_date_epoch) if self.source_date_epoch is not None else time.time()

    def usable(self, output: Output) -> bool:
        if output.diff_id is None:
            return True
        for record in self.store.index.layers_by_diff_id(output.diff_id):
            if self.store.blobs.stat(record.digest) is not None:
                return True
        return False


class MetaOp:
    """A config-only step (ENV, LABEL, CMD, ...): nothing to run, nothing to cache."""

    cacheable = False

    def content(self, parent: State, deps: Sequence[State]) -> Content | None:
        return None

    def run(self, parent: State, deps: Sequence[State]) -> Output:
        return Output()

    def usable(self, output: Output) -> bool:
        return True

    def close(self) -> None:
        pass


class WorkdirOp:
    """WORKDIR: makes the directory (and missing parents) when the filesystem lacks it."""

    cacheable = True

    def __init__(self, services: BuildServices, step: Step) -> None:
        self.services = services
        self.path = step.workdir

    def content(self, parent: State, deps: Sequence[State]) -> Content | None:
        return None

    def usable(self, output: Output) -> bool:
        return self.services.usable(output)

    def close(self) -> None:
        pass

    def run(self, parent: State, deps: Sequence[State]) -> Output:
        parts = [p for p in self.path.split("/") if p]
        if not parts:
            return Output()
        lower = self.services.filesystem(parent) if self.services.has_layers(parent) else None
        if lower is not None:
            target = lower.joinpath(*parts)
            if target.is_dir() and not target.is_symlink():
                return Output()  # already there: no layer, like `mkdir -p`
        with tempfile.TemporaryDirectory(dir=self.services.store.root / "tmp") as tmp:
            # Parents that exist below keep their metadata in this layer (as an overlay upper dir
            # would carry them); the directories made here are 0755, root-owned, dated at the epoch.
            created: list[Path] = []
            kept: list[tuple[Path, os.stat_result]] = []
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
                    kept.append((here, st))
                else:
                    os.chmod(here, 0o755)
                    created.append(here)
            for path, st in reversed(kept):
                os.chmod(path, stat.S_IMODE(st.st_mode))
                if os.geteuid() == 0:
                    os.chown(path, st.st_uid, st.st_gid)
                os.utime(path, ns=(st.st_mtime_ns, st.st_mtime_ns))
            for path in reversed(created):
                os.utime(path, ns=(0, 0))
            changes = ChangeSet(changed=tuple(str(p.relative_to(tmp)) for p in created))
            epoch = self.services.source_date_epoch
            return self.services.store_layer(
                lambda out: write_changes(tmp, changes, out, source_date_epoch=epoch)
            )


def op_kind(step: Step) -> str:
    if isinstance(step.command, c.Workdir):
        return "workdir"
    if isinstance(step.command, c.Run):
        return "run"
    if isinstance(step.command, c.SourcesAndDest):
        return "copy"
    return "meta"


__all__ = ["MEDIA_LAYER_ZSTD", "BuildServices", "MetaOp", "WorkdirOp", "op_kind"]
