"""FileCopy (COPY/ADD) tasks: select and key the sources, then write their layer into the store."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, cast

from layerbuild.context.tree import BuildContext, SourceTree, StageTree
from layerbuild.errors import BuildError
from layerbuild.instructions.commands import SourceContent
from layerbuild.plan import FileCopy
from layerbuild.solve import Content, Inputs, Output
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


class _Stoppable:
    """A blob writer that refuses further bytes once `stop` is set (a cancelled guess)."""

    def __init__(self, out: BinaryIO, stop: threading.Event) -> None:
        self._out = out
        self._stop = stop

    def write(self, data: bytes) -> int:
        if self._stop.is_set():
            raise BuildError("the guessed layer is no longer needed")
        return self._out.write(data)


def named_context(contexts: Mapping[str, BuildContext], name: str) -> BuildContext:
    """The named context `name` of the build; the planner names only those the build was given."""
    tree = contexts.get(name)
    if tree is None:
        raise BuildError(f"named context {name!r} was not given", hint=f"pass --build-context {name}=DIR")
    return tree


class CopyTask:
    """One FileCopy op: what it reads is the context, or the input `from_input` names."""

    def __init__(self, services: BuildServices, op: FileCopy, inputs: Inputs, context: BuildContext, *,
                 contexts: Mapping[str, BuildContext] | None = None, guess: bool = False) -> None:
        self.services = services
        # A guess (Executor.speculate) stops writing once `cancel` is called: nobody needs it then.
        self._cancelled = threading.Event() if guess else None
        self.op = op
        self.inputs = inputs
        self.context = context
        self.contexts = contexts or {}
        self.selection: CopySelection | None = None
        self._label = ""  # how a miss reason names the files of a named context

    def _tree(self) -> SourceTree:
        if self.op.from_input is None:
            return self.context
        if self.op.from_input >= len(self.inputs.deps):
            raise BuildError("COPY --from: nothing to copy from")
        dep = self.inputs.deps[self.op.from_input]
        if dep.context is not None:
            self._label = f"context {dep.context}: "
            return named_context(self.contexts, dep.context)
        return StageTree(self.services.filesystem(dep))

    def content(self) -> Content | None:
        op = self.op
        self.selection = select_copy(
            self._tree(), op.sources, op.dest,
            workdir=op.workdir, excludes=op.excludes, parents=op.parents,
            chown=op.chown, chmod=op.chmod, link=op.link,
            heredocs=tuple(SourceContent(path=f.name, data=f.data, expand=False) for f in op.contents),
            is_add=op.add, checksum=op.checksum, keep_git_dir=op.keep_git_dir,
            allow_empty_wildcard=True,  # as BuildKit's Dockerfile COPY/ADD: a pattern may match nothing
        )  # fmt: skip
        files = self.selection.fingerprints
        if self._label:
            files = {self._label + name: fp for name, fp in files.items()}
        return Content(self.selection.content_key, files)

    def run(self, previous: Output | None) -> Output:
        if self.selection is None:
            self.content()
        sel = self.selection
        assert sel is not None
        parent = self.inputs.parent
        lower = self.services.filesystem(parent) if self.services.has_layers(parent) else None
        chown = self.op.chown
        user_db: UserDB = StaticUserDB()
        if chown and lower is not None and not all(p.isdigit() for p in chown.split(":") if p):
            user_db = RootfsUserDB(lower)
        existing: Callable[[str], bool] = _exists_in(lower) if lower is not None else (lambda path: False)
        from layerbuild.worker.copywrite import no_below, rootfs_parents  # the layer writer, on first use

        below = rootfs_parents(lower) if lower is not None else no_below
        if lower is not None and not sel.link:
            # The destination through the image's symlinks, followed inside it, as BuildKit's copy
            # resolves it: `COPY f /link/` with `/link -> /real` writes `/real/f`, never a `link/`
            # directory that would hide the link.
            from layerbuild.runtime.merged import MergedView

            parts, _ = MergedView([Path(lower)]).resolve(sel.dest)
            sel.dest = "/" + "/".join(parts)
        epoch = self.op.source_date_epoch
        reuse = self.services.reuse_from(previous)
        cancelled = self._cancelled
        return self.services.store_layer(
            lambda out: write_copy_layer(
                sel, out if cancelled is None else cast(BinaryIO, _Stoppable(out, cancelled)), user_db=user_db, existing=existing,
                below=below, source_date_epoch=epoch, reuse=reuse, pack_only=True,
            ), frames=True,
        )  # fmt: skip

    def cancel(self) -> None:
        """A guess that is no longer wanted: its layer write fails at its next block (nothing stored)."""
        if self._cancelled is not None:
            self._cancelled.set()

    def close(self) -> None:
        if self.selection is not None:
            self.selection.close()
            self.selection = None
