"""The Executor seam of real builds: a fake Exec in front of the worker's executor sees exactly the op
definition and its inputs, and runs again whenever any of what it was handed changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.plan import Exec, OpDef
from layerbuild.solve import BuildResult, Content, Executor, Inputs, Output, Task
from layerbuild.store import Store
from layerbuild.worker.build import run_build
from layerbuild.worker.request import BuildRequest
from tests.build.conftest import write


@dataclass
class FakeExec:
    """Runs Exec ops as no-ops that record what they were given; every other op goes to the real one."""

    real: Executor
    seen: list[Exec] = field(default_factory=list)

    def prepare(self, op: OpDef, inputs: Inputs) -> Task:
        if not isinstance(op, Exec):
            return self.real.prepare(op, inputs)
        real_task = self.real.prepare(op, inputs)  # keys bind mounts by content, like a real RUN
        fake = self

        class Recorded:
            def content(self) -> Content | None:
                return real_task.content()

            def run(self, previous: Output | None) -> Output:
                fake.seen.append(op)
                return Output()

            def close(self) -> None:
                real_task.close()

        return Recorded()

    def usable(self, output: Output) -> bool:
        return self.real.usable(output)


DOCKERFILE = """\
FROM scratch
COPY a.txt /a.txt
COPY dirs/ /
USER {user}
WORKDIR {workdir}
SHELL {shell}
RUN --mount=type=bind,source=m.txt,target=/m.txt make
"""


def build(ctx: Path, root: Path, fake: FakeExec, **options: object) -> BuildResult:
    with Store.open(root) as store:
        request = BuildRequest(context=ctx, **options)  # type: ignore[arg-type]
        return run_build(request, store, wrap_executor=lambda real: setattr(fake, "real", real) or fake)


def setup(ctx: Path, user: str = "1000", workdir: str = "/w1", shell: str = '["/bin/sh", "-c"]') -> None:
    write(ctx, {"Dockerfile": DOCKERFILE.format(user=user, workdir=workdir, shell=shell), "a.txt": "a",
                "m.txt": "one", "dirs/w1/.keep": "", "dirs/w2/.keep": ""})  # both WORKDIRs exist


def run_reason(result: BuildResult) -> tuple[bool, str | None]:
    step = next(s for s in result.steps if s.kind == "exec")
    return step.cached, step.reason


def test_the_fake_sees_the_op_and_reruns_on_each_change(ctx: Path, root: Path) -> None:
    fake = FakeExec(real=None)  # type: ignore[arg-type]
    setup(ctx)
    build(ctx, root, fake)
    assert len(fake.seen) == 1
    op = fake.seen[0]
    assert (op.user, op.workdir, op.shell, op.args, op.network) == ("1000", "/w1", ("/bin/sh", "-c"),
                                                                       ("make",), "default")
    assert run_reason(build(ctx, root, fake)) == (True, None)
    assert len(fake.seen) == 1

    setup(ctx, user="2000")
    assert run_reason(build(ctx, root, fake)) == (False, "USER 1000 → 2000")
    assert fake.seen[-1].user == "2000"

    setup(ctx, user="2000", workdir="/w2")
    assert run_reason(build(ctx, root, fake)) == (False, "WORKDIR /w1 → /w2")

    setup(ctx, user="2000", workdir="/w2", shell='["/bin/sh", "-ec"]')
    assert run_reason(build(ctx, root, fake)) == (False, 'SHELL ["/bin/sh", "-c"] → ["/bin/sh", "-ec"]')
    assert fake.seen[-1].argv == ("/bin/sh", "-ec", "make")

    (ctx / "m.txt").write_text("two")
    assert run_reason(build(ctx, root, fake)) == (False, "bind mount m.txt changed")

    assert run_reason(build(ctx, root, fake, network="none")) == (False, "network default → none")
    assert fake.seen[-1].network == "none"
    assert len(fake.seen) == 6
    assert run_reason(build(ctx, root, fake, network="none")) == (True, None)
    assert len(fake.seen) == 6


def test_an_edit_that_keeps_size_and_mtime_of_a_bind_source_reruns(ctx: Path, root: Path) -> None:
    import os

    fake = FakeExec(real=None)  # type: ignore[arg-type]
    setup(ctx)
    build(ctx, root, fake)
    st = os.stat(ctx / "m.txt")
    (ctx / "m.txt").write_text("ONE")
    os.utime(ctx / "m.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert run_reason(build(ctx, root, fake)) == (False, "bind mount m.txt changed")
    # An mtime alone is not an input: touching the file re-runs nothing.
    os.utime(ctx / "m.txt", ns=(1, 1))
    assert run_reason(build(ctx, root, fake)) == (True, None)


def test_source_date_epoch_is_part_of_the_ops_that_write_files(ctx: Path, root: Path) -> None:
    fake = FakeExec(real=None)  # type: ignore[arg-type]
    setup(ctx)
    build(ctx, root, fake, source_date_epoch=1)
    again = build(ctx, root, fake, source_date_epoch=2)
    copies = [s for s in again.steps if s.kind == "copy"]
    assert copies and not any(s.cached for s in copies)
    assert copies[0].reason == "source_date_epoch 1 → 2"
    assert fake.seen[-1].source_date_epoch == 2
