"""The worker's Executor: runs every op kind of plan.ops on its resolved inputs, and nothing else.

Each task is built from the op definition and the solver's `Inputs` alone; what the build as a
whole provides (the store, the build context and the named ones, the secrets' files, the ssh
agents) is reached only through what an op names: a FileCopy or a context bind mount reads a context
through the selection it is keyed by, a secret or ssh mount its id. Tests swap this for a toy (see
`Build(wrap_executor=...)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from layerbuild.context.tree import BuildContext
from layerbuild.errors import BuildError
from layerbuild.plan import ConfigEdit, Exec, FileCopy, MakeDir, OpDef
from layerbuild.solve import Inputs, Output, Task
from layerbuild.worker.ops import BuildServices, ConfigTask, MakeDirTask

if TYPE_CHECKING:
    from layerbuild.worker.sshagent import SshAgents


class WorkerExecutor:
    """Runs ops on this machine: processes in the sandbox, copies and directories as layers."""

    def __init__(self, services: BuildServices, context: BuildContext, *,
                 secrets: Mapping[str, Path] | None = None, allow: frozenset[str] = frozenset(),
                 contexts: Mapping[str, BuildContext] | None = None, ssh: SshAgents | None = None) -> None:
        self.services = services
        self.context = context
        self.secrets = dict(secrets or {})
        self.allow = allow
        self.contexts = dict(contexts or {})  # the named contexts (`--build-context NAME=DIR`) by name
        self.ssh = ssh

    def cancel(self) -> None:
        """The build is being abandoned (Ctrl-C): stop the RUN steps under way now."""
        import sys

        if "layerbuild.runtime.sandbox" in sys.modules:  # no step ever ran otherwise
            from layerbuild.runtime.sandbox import cancel_running

            cancel_running()

    def prepare(self, op: OpDef, inputs: Inputs) -> Task:
        if isinstance(op, Exec):
            from layerbuild.worker.runop import RunTask, check_entitled

            check_entitled(op, self.allow)  # before the cache is asked: a cached insecure step needs it too

            return RunTask(self.services, op, inputs, secrets=self.secrets, context=self.context,
                           contexts=self.contexts, ssh=self.ssh)
        if isinstance(op, FileCopy):
            from layerbuild.worker.copyop import CopyTask

            return CopyTask(self.services, op, inputs, self.context, contexts=self.contexts)
        if isinstance(op, MakeDir):
            return MakeDirTask(self.services, op, inputs)
        if isinstance(op, ConfigEdit):
            return ConfigTask()
        raise BuildError(f"no executor for a {type(op).__name__} op")

    def speculate(self, op: OpDef, inputs: Inputs) -> Task | None:
        """A task for `op` on a guessed parent, run while the step before it still runs (see
        Solver._speculate_next): only a COPY from the build context, whose run writes nothing but a
        layer into the store (no download, no other stage to wait for). Its layer is never cached;
        the real run takes its frames where they are the same."""
        if not isinstance(op, FileCopy) or op.from_input is not None or op.add:
            return None
        from layerbuild.worker.copyop import CopyTask

        return CopyTask(self.services, op, inputs, self.context, contexts=self.contexts, guess=True)

    def usable(self, output: Output) -> bool:
        return self.services.usable(output)
