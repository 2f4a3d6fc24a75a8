"""COPY and ADD as a solver Op: select and key the sources, then write their layer into the store."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from layerbuild.errors import BuildError
from layerbuild.instructions import commands as c
from layerbuild.plan import Step
from layerbuild.solve import Content, Output, State
from layerbuild.worker.context import BuildContext, SourceTree, StageTree
from layerbuild.worker.copy import CopySelection, select_copy, write_copy_layer
from layerbuild.worker.copyowner import RootfsUserDB, StaticUserDB, UserDB
from layerbuild.worker.ops import BuildServices


def _exists_in(root: Path) -> Callable[[str], bool]:
    def existing(path: str) -> bool:
        """Whether `path` (absolute, in the image) is already a directory (or a link) below."""
        here = root
        for part in [p for p in path.split("/") if p]:
            here = here / part
            try:
                st = os.lstat(here)
            except OSError:
                return False
            if stat.S_ISLNK(st.st_mode):
                return True  # never walk a link: what it points at is the image's business
            if not stat.S_ISDIR(st.st_mode):
                return False
        return True

    return existing


class CopyOp:
    """One COPY/ADD step."""

    cacheable = True

    def __init__(self, services: BuildServices, step: Step, context: BuildContext, stage_label: str) -> None:
        self.services = services
        self.step = step
        self.stage_label = stage_label
        self.context = context
        command = step.command
        assert isinstance(command, c.SourcesAndDest)
        self.command = command
        self.selection: CopySelection | None = None

    def _tree(self, deps: Sequence[State]) -> SourceTree:
        if isinstance(self.command, c.Copy) and self.command.from_stage:
            if not deps:
                raise BuildError(f"COPY --from={self.command.from_stage}: nothing to copy from")
            return StageTree(self.services.filesystem(deps[0]))
        return self.context

    def content(self, parent: State, deps: Sequence[State]) -> Content | None:
        cmd = self.command
        is_add = isinstance(cmd, c.Add)
        self.selection = select_copy(
            self._tree(deps), cmd.sources, cmd.dest,
            workdir=self.step.workdir, excludes=cmd.excludes,
            parents=isinstance(cmd, c.Copy) and cmd.parents,
            chown=cmd.chown, chmod=cmd.chmod, link=cmd.link, heredocs=cmd.contents, is_add=is_add,
            checksum=cmd.checksum if isinstance(cmd, c.Add) else None,
            keep_git_dir=isinstance(cmd, c.Add) and cmd.keep_git_dir,
        )  # fmt: skip
        return Content(self.selection.content_key, self.selection.fingerprints)

    def usable(self, output: Output) -> bool:
        return self.services.usable(output)

    def run(self, parent: State, deps: Sequence[State]) -> Output:
        sel = self.selection if self.selection is not None else None
        if sel is None:
            self.content(parent, deps)
            sel = self.selection
        assert sel is not None
        lower = self.services.filesystem(parent) if self.services.has_layers(parent) else None
        chown = self.command.chown
        user_db: UserDB = StaticUserDB()
        if chown and lower is not None and not all(p.isdigit() for p in chown.split(":") if p):
            user_db = RootfsUserDB(lower)
        existing: Callable[[str], bool] = _exists_in(lower) if lower is not None else (lambda path: False)
        epoch = self.services.source_date_epoch
        return self.services.store_layer(
            lambda out: write_copy_layer(
                sel,
                out,
                user_db=user_db,
                existing=existing,
                source_date_epoch=epoch,
                reuse=self.services.reuse_for(self.stage_label, self.step.index),
            )
        )

    def close(self) -> None:
        if self.selection is not None:
            self.selection.close()
            self.selection = None
