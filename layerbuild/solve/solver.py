"""The solver: walk the plan, key every step's op, reuse what the cache holds, run the rest.

Effects come in through two small protocols: `Executor` (runs an op on its resolved inputs,
supplied by the worker; tests use toy executors) and `Cache` (where results are kept). The solver
knows op definitions and results, never Dockerfile instructions. Independent stages run
concurrently, bounded by `jobs`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from layerbuild.errors import BuildError, DockerfileError, LayerbuildError, StepError
from layerbuild.plan import (
    BaseImage,
    BuildPlan,
    FileCopy,
    LocalContext,
    OpDef,
    PlannedStage,
    Scratch,
    StageRef,
    Step,
)
from layerbuild.solve import keys
from layerbuild.solve.explain import History, StepRecord, explain_miss, file_changes
from layerbuild.solve.report import BuildEvent, StepReport


@dataclass(frozen=True)
class Output:
    """What a step produced: a layer (diff_id, compressed size) or nothing but a config change."""

    diff_id: str | None = None
    size: int | None = None
    created: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Content:
    """The content key of the files a step reads, and each file's fingerprint (to name changes)."""

    key: str
    files: Mapping[str, str] = field(default_factory=dict)


class Applied:
    """The steps applied since the base image, oldest first, each with its output.

    A persistent chain: `then` shares everything before it, so a stage of n steps costs O(n) where
    copying a tuple at every step cost O(n²). Iterating and comparing see the plain sequence."""

    __slots__ = ("_item", "_len", "_prev")

    def __init__(self, prev: Applied | None = None, item: tuple[Step, Output] | None = None) -> None:
        self._prev, self._item = prev, item
        self._len: int = 0 if item is None else len(prev or ()) + 1

    def then(self, step: Step, output: Output) -> Applied:
        return Applied(self, (step, output))

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[Step, Output]]:
        items: list[tuple[Step, Output]] = []
        node: Applied | None = self
        while node is not None and node._item is not None:
            items.append(node._item)
            node = node._prev
        return reversed(items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Applied) and (other is self or tuple(self) == tuple(other))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Applied({list(self)!r})"


NOTHING_APPLIED = Applied()


@dataclass(frozen=True)
class State:
    """A filesystem + config state: the base image it starts from and the steps applied since.
    `context` names the named build context (`--build-context`) the state stands for, if any: ops
    read such an input by the content they select, never by its result."""

    result: str
    base: BaseImage | None = None
    applied: Applied = NOTHING_APPLIED
    context: str | None = None
    # A dry run's state after a step that would run: its result cannot be known without running it,
    # so `pending` names that step (`stage:index `TEXT``) and every step on top of it would run too.
    pending: str | None = None

    @property
    def layers(self) -> tuple[str, ...]:
        """diff_ids of the layers the steps added (the base image's own layers not included)."""
        return tuple(o.diff_id for _, o in self.applied if o.diff_id is not None)


@dataclass(frozen=True)
class Inputs:
    """What an op runs on: the state before it and the states of the inputs it names (the op's
    `from_input` positions index `deps`). `log`, when set, receives each line of a process's output."""

    parent: State
    deps: tuple[State, ...] = ()
    log: Callable[[str], None] | None = None


class Task(Protocol):
    """One op prepared on its inputs. `content` is read before the cache lookup (the key of what the
    op reads by content, or None); `run` happens only on a miss; `close` is called once, always."""

    def content(self) -> Content | None:
        """The content key of what the op reads from the context or its content-keyed inputs."""

    def run(self, previous: Output | None) -> Output:
        """Do the op; `previous` is this step's output in the last build, or of a guess run ahead of
        it (a hint for incremental writes, never an input of the result). Raises a LayerbuildError
        on failure."""

    def close(self) -> None:
        """Release what the task holds (downloads, selections)."""


class Executor(Protocol):
    """Runs every op kind. It is handed the op definition and its resolved inputs and nothing else,
    so it cannot read what the key does not cover."""

    def prepare(self, op: OpDef, inputs: Inputs) -> Task:
        """A task for `op` on `inputs`; nothing with effects happens before `run`."""

    def usable(self, output: Output) -> bool:
        """Whether a cached output can still be used (its layer is in the store)."""

    # Optional: `speculate(op, inputs) -> Task | None`, a task for `op` on a guess of its parent
    # (the state before the step that is still running before it), whose `run(None)` has no effect
    # but on the store; its output is only ever the real run's `previous` (frames to build on),
    # never a cached result. None when the op cannot be run ahead (see Solver._speculate_next).


class Cache(Protocol):
    def get(self, key: str) -> Output | None: ...

    def put(self, key: str, kind: str, output: Output) -> None: ...


@dataclass(frozen=True)
class SolveOptions:
    """How the solver runs: stages at once, cache bypasses, and dry runs."""

    jobs: int = 1
    no_cache: bool = False
    no_cache_filter: frozenset[str] = frozenset()
    # Look every step up without running any: a miss is reported with its reason, and the steps that
    # depend on it with "runs: upstream step … runs" (their keys need the missed step's result).
    dry_run: bool = False


@dataclass(frozen=True)
class SolveResult:
    """What solving a plan gave: each stage's final state, the step reports and the records to keep."""

    states: Mapping[int, State]
    reports: tuple[StepReport, ...]
    records: tuple[StepRecord, ...]


class Solver:
    """Solves one plan, running every op through `executor`."""

    def __init__(
        self,
        plan: BuildPlan,
        executor: Executor,
        cache: Cache,
        *,
        options: SolveOptions | None = None,
        previous: History | None = None,
        on_event: Callable[[BuildEvent], None] | None = None,
    ) -> None:
        self.plan = plan
        self.executor = executor
        self.cache = cache
        self.options = options or SolveOptions()
        self.previous = previous
        self._on_event = on_event
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reports: dict[tuple[int, int], StepReport] = {}
        self._records: dict[tuple[int, int], StepRecord] = {}
        self._futures: dict[int, Future[State]] = {}
        # Steps run ahead on a guess of their parent while the step before them runs (speculate):
        # (stage, step) -> (the task, its content taken, its output or None).
        self._ahead: dict[tuple[int, int], tuple[Task, threading.Event, Future[Output | None]]] = {}
        self._ahead_pool: ThreadPoolExecutor | None = None
        # The stages whose layers end up in the image: the target and the stages it starts FROM. A
        # cache that fetches layers lazily (`prefetch`) is told of their hits at once, so the image's
        # layers download while the rest solves (never in a dry run, which writes no image).
        self._prefetch = None if self.options.dry_run else getattr(cache, "prefetch", None)
        self._final: set[int] = set()
        if self._prefetch is not None:
            index: int | None = plan.target
            while index is not None and index not in self._final:
                self._final.add(index)
                base = plan.stage(index).base
                index = base.index if isinstance(base, StageRef) else None

    def _emit(self, event: BuildEvent) -> None:
        if self._on_event is not None:
            with self._lock:
                self._on_event(event)

    def solve(self) -> SolveResult:
        jobs = max(1, self.options.jobs)
        if getattr(self.executor, "speculate", None) is not None and not self.options.dry_run:
            self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ahead")
        try:
            return self._solve(jobs)
        finally:
            if self._ahead_pool is not None:
                with self._lock:
                    left = list(self._ahead.values())
                    self._ahead.clear()
                for task, _taken, _future in left:
                    _cancel(task)
                self._ahead_pool.shutdown(wait=True)

    def _solve(self, jobs: int) -> SolveResult:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="stage") as pool:
            # Submitted in dependency order, so a stage only ever waits for stages already started.
            for stage in self.plan.stages:
                self._futures[stage.index] = pool.submit(self._stage, stage)
            try:
                states = {i: f.result() for i, f in self._futures.items()}
            except BaseException as exc:
                for future in self._futures.values():
                    future.cancel()
                if not isinstance(exc, Exception):
                    # Ctrl-C: start nothing more and stop what runs (an executor may offer `cancel()`),
                    # so that the pool's shutdown does not wait for a long RUN step to end.
                    self._stopping.set()
                    cancel = getattr(self.executor, "cancel", None)
                    if cancel is not None:
                        cancel()
                raise
        order = [(s.index, step.index) for s in self.plan.stages for step in s.steps]
        return SolveResult(
            states=states,
            reports=tuple(self._reports[k] for k in order),
            records=tuple(self._records[k] for k in order),
        )

    # -- one stage --------------------------------------------------------------------------

    def _source_state(self, ref: Scratch | BaseImage | StageRef | LocalContext) -> State:
        if isinstance(ref, StageRef):
            return self._futures[ref.index].result()
        if isinstance(ref, LocalContext):
            return State(result=keys.combine("context", ref.name), context=ref.name)
        return State(result=keys.base_result(ref), base=ref if isinstance(ref, BaseImage) else None)

    def _stage(self, stage: PlannedStage) -> State:
        state = self._source_state(stage.base)
        from_step = stage.steps[0]
        base_record = StepRecord(
            stage=stage.label, index=0, text=from_step.text, kind="base", definition=state.result,
            parent="", result=state.result, op=keys.plain(from_step.op),
        )  # fmt: skip
        base_record = replace(base_record, reason=self._base_reason(stage, base_record))
        self._finish(stage, from_step, base_record, replace(_report(stage, from_step), cached=True))
        records = [base_record]
        no_cache = self._no_cache_reason(stage)
        for step in stage.steps[1:]:
            state = self._step(stage, step, state, records, no_cache)
        return state

    def _base_reason(self, stage: PlannedStage, record: StepRecord) -> str | None:
        """Why the stage starts from something else than last time (None when it does not)."""
        if self.previous is None:
            return None
        before = self.previous.get((stage.label, 0))
        if before is None or before.result == record.result:
            return None
        if isinstance(stage.base, BaseImage):
            return f"base image {stage.base.ref} now {_short_digest(stage.base.identity)}"
        if isinstance(stage.base, StageRef):
            label = self.plan.stage(stage.base.index).label
            return f"base stage {label} changed"
        return "base changed"

    def _no_cache_reason(self, stage: PlannedStage) -> str | None:
        if self.options.no_cache:
            return "--no-cache"
        if stage.name is not None and stage.name in self.options.no_cache_filter:
            return f"--no-cache-filter {stage.name}"
        return None

    def _log(self, stage: PlannedStage, step: Step) -> Callable[[str], None] | None:
        if self._on_event is None:
            return None
        report = _report(stage, step)
        return lambda line: self._emit(BuildEvent("step.log", report, message=line))

    def _step(
        self, stage: PlannedStage, step: Step, parent: State, records: list[StepRecord], no_cache: str | None
    ) -> State:
        if self._stopping.is_set():
            raise BuildError("the build was stopped")
        deps = tuple(self._source_state(s) for s in step.sources)
        if self.options.dry_run:
            pending = parent.pending or next((d.pending for d in deps if d.pending), None)
            if pending is not None:
                own = self._own_changes(stage, step, parent, deps) if parent.pending and not any(
                    d.pending for d in deps) else None
                return self._pending_step(stage, step, parent, pending, records, own)
        task = self.executor.prepare(step.op, Inputs(parent, deps, self._log(stage, step)))
        try:
            return self._solve_step(task, stage, step, parent, deps, records, no_cache)
        except (DockerfileError, StepError):
            raise
        except LayerbuildError as exc:
            # Say where: the Dockerfile line and the instruction, then what went wrong.
            raise StepError(exc.message, filename=self.plan.filename, line=step.line, instruction=step.text,
                            hint=exc.hint) from exc
        finally:
            task.close()

    def _previous_output(self, stage: PlannedStage, step: Step) -> Output | None:
        """This step's output in the last build, if its record is still in the cache."""
        if self.previous is None:
            return None
        record = self.previous.get((stage.label, step.index))
        if record is None or record.input is None:
            return None
        return self.cache.get(record.input)

    def _solve_step(
        self, task: Task, stage: PlannedStage, step: Step, parent: State, deps: tuple[State, ...],
        records: list[StepRecord], no_cache: str | None,
    ) -> State:
        op = step.op
        definition, op_data = keys.definition(op)
        started = time.monotonic()
        base_report = _report(stage, step)
        if not op.cacheable:
            output = task.run(None)  # config only (ENV, LABEL, ...): nothing executes, in a dry run too
            new = replace(parent, applied=parent.applied.then(step, output))
            record = StepRecord(stage=stage.label, index=step.index, text=step.text, kind=step.kind,
                                definition=definition, parent=parent.result, result=parent.result,
                                args=dict(step.args), op=op_data)
            records.append(record)
            self._finish(stage, step, record, replace(base_report, cached=True))
            return new

        by_content = op.content_inputs()
        dep_results = [d.result for i, d in enumerate(deps) if i not in by_content]
        # A step keyed by the files it reads from other stages or images (COPY --from, RUN --mount
        # from=) is also recorded by those sources' results, which name their layers' contents
        # exactly: a hit by that key needs none of their files (a stage cached elsewhere need not
        # be downloaded). Only when those sources are all it reads (no bind mount of the build
        # context), and never for a named local context, whose result is its name, not its contents.
        alias = None
        reads_only_inputs = getattr(op, "reads_only_inputs", None)
        if by_content and reads_only_inputs is not None and reads_only_inputs() \
                and all(deps[i].context is None for i in by_content):
            alias = keys.by_results_key(definition, parent.result, [d.result for d in deps])

        def usable_hit(key: str) -> Output | None:
            hit = None if no_cache else self.cache.get(key)
            return hit if hit is not None and self.executor.usable(hit) else None

        ahead = self._take_ahead(stage, step)
        content = None
        cached = usable_hit(alias) if alias is not None else None
        if cached is not None and alias is not None:
            key = alias  # taken without reading the sources' files
        else:
            content = task.content()
            key = keys.input_key(definition, parent.result, dep_results, content.key if content else None)
            cached = usable_hit(key)
            if cached is not None and alias is not None and not self.options.dry_run:
                self.cache.put(alias, step.kind, cached)  # a dry run stores nothing
        record = StepRecord(
            stage=stage.label, index=step.index, text=step.text, kind=step.kind, definition=definition,
            parent=parent.result, result="", args=dict(step.args), deps=tuple(dep_results),
            content=content.key if content else None, files=dict(content.files) if content else None,
            input=key, alias=alias, op=op_data,
        )  # fmt: skip
        if cached is not None:
            if ahead is not None:
                _cancel(ahead[0])  # its guess is not needed: let it stop
            output = cached
            reason = None
            if self._prefetch is not None and output.diff_id is not None and stage.index in self._final:
                self._prefetch([output.diff_id])
        else:
            reason = explain_miss(record, records, self.previous, no_cache=no_cache)
            beyond = getattr(self.cache, "explain", None)  # a cache shared with other machines says more
            more = beyond(record) if beyond is not None and not no_cache else None
            if more:
                reason = f"{reason}; {more}" if reason else more
            if self.options.dry_run:
                return self._would_run(stage, step, parent, record, reason, records)
            self._emit(BuildEvent("step.started", replace(base_report, reason=reason)))
            if step.kind == "exec":
                self._speculate_next(stage, step, parent)
            previous = self._previous_output(stage, step)
            if ahead is not None:
                guess = ahead[2].result()  # never raises: a failed guess is None
                previous = guess if guess is not None else previous
            try:
                output = task.run(previous)
            except LayerbuildError as exc:
                failed = replace(base_report, reason=reason, duration_s=time.monotonic() - started)
                self._emit(BuildEvent("step.failed", failed, message=exc.render()))
                raise
            except Exception as exc:  # a bug in an op: still a located failure, not a hang
                failed = replace(base_report, reason=reason, duration_s=time.monotonic() - started)
                self._emit(BuildEvent("step.failed", failed, message=str(exc)))
                raise BuildError(f"step {stage.label}:{step.index} `{step.text}` failed: {exc}") from exc
            self.cache.put(key, step.kind, output)
            if alias is not None:
                self.cache.put(alias, step.kind, output)
        result = keys.layer_result(parent.result, output.diff_id, definition) if output.diff_id else parent.result
        record = replace(record, result=result, reason=reason, layer=output.diff_id)
        records.append(record)
        report = replace(
            base_report, cached=cached is not None, reason=reason,
            duration_s=time.monotonic() - started, layer=output.diff_id, size=output.size, key=key,
        )  # fmt: skip
        self._finish(stage, step, record, report)
        return State(result=result, base=parent.base, applied=parent.applied.then(step, output))

    def _speculate_next(self, stage: PlannedStage, step: Step, parent: State) -> None:
        """While `step` runs, run the stage's next step that does something (config-only steps
        between change no files) on `parent`, the state before `step`, as a guess of the state it
        will have: a COPY from the context then hashes its files and compresses its layer during a
        long RUN, and its real run builds on that layer's frames (reading and compressing only
        what the RUN changed in what it writes). The guess is never cached or reported."""
        speculate = getattr(self.executor, "speculate", None)
        if speculate is None or self._ahead_pool is None or self._stopping.is_set():
            return
        position = stage.steps.index(step)
        following = next((s for s in stage.steps[position + 1:] if s.op.cacheable), None)
        if following is None or following.sources:  # a step reading other stages would wait for them
            return
        task = speculate(following.op, Inputs(parent, ()))
        if task is None:
            return
        taken = threading.Event()

        def guess() -> Output | None:
            try:
                task.content()
                taken.set()
                output: Output = task.run(None)
                return output
            except Exception:  # a guess that fails costs nothing: the real run does its own work
                return None
            finally:
                taken.set()
                task.close()

        with self._lock:
            self._ahead[stage.index, following.index] = (task, taken, self._ahead_pool.submit(guess))

    def _take_ahead(self, stage: PlannedStage, step: Step) -> tuple[Task, threading.Event, Future[Output | None]] | None:
        """The guess run ahead for `step`, if any, once it has taken its content (so the real
        task's content, which reads the same files, never runs beside it)."""
        with self._lock:
            ahead = self._ahead.pop((stage.index, step.index), None)
        if ahead is not None:
            ahead[1].wait()
        return ahead

    def _would_run(self, stage: PlannedStage, step: Step, parent: State, record: StepRecord, reason: str | None,
                   records: list[StepRecord]) -> State:
        """A dry run's miss: reported with its reason, not run; what comes after it is pending on it."""
        records.append(replace(record, reason=reason))
        report = replace(_report(stage, step), reason=reason, key=record.input)
        self._finish(stage, step, record, report)
        return replace(parent, result="", pending=f"{stage.label}:{step.index} `{step.text}`")

    def _own_changes(self, stage: PlannedStage, step: Step, parent: State, deps: tuple[State, ...]) -> str | None:
        """For a dry run's COPY/ADD from the context on top of a step that would run: which of its own
        sources changed since the last build (what it reads is known without running anything)."""
        op = step.op
        if not isinstance(op, FileCopy) or op.from_input is not None or self.previous is None:
            return None
        before = self.previous.get((stage.label, step.index))
        if before is None or before.files is None:
            return None
        task = self.executor.prepare(op, Inputs(parent, deps))
        try:
            content = task.content()
        except LayerbuildError:
            return None
        finally:
            task.close()
        return file_changes(before.files, content.files) if content is not None else None

    def _pending_step(self, stage: PlannedStage, step: Step, parent: State, pending: str,
                      records: list[StepRecord], own: str | None = None) -> State:
        """A dry run's step on top of one that would run: its key cannot be known, so it would run too
        (a config-only step is listed as it is in a real build: it never runs). `own` says what of its
        own inputs changed, when that is known without running anything (a COPY's sources)."""
        op = step.op
        definition, op_data = keys.definition(op)
        reason = None if not op.cacheable else f"runs: upstream step {pending} runs"
        if reason is not None and own:
            reason += f"; its own sources: {own}"
        record = StepRecord(stage=stage.label, index=step.index, text=step.text, kind=step.kind,
                            definition=definition, parent="", result="", args=dict(step.args), op=op_data,
                            reason=reason)
        records.append(record)
        self._finish(stage, step, record, replace(_report(stage, step), cached=not op.cacheable, reason=reason))
        return replace(parent, result="", pending=pending)

    def _finish(self, stage: PlannedStage, step: Step, record: StepRecord, report: StepReport) -> None:
        with self._lock:
            self._reports[stage.index, step.index] = report
            self._records[stage.index, step.index] = record
        self._emit(BuildEvent("step.cached" if report.cached else "step.finished", report))


def _cancel(task: Task) -> None:
    cancel = getattr(task, "cancel", None)
    if cancel is not None:
        cancel()


def _report(stage: PlannedStage, step: Step) -> StepReport:
    """The step as reports name it, not yet cached or finished."""
    return StepReport(stage=stage.label, index=step.index, instruction=step.text, kind=step.kind,
                      cached=False, line=step.line)


def _short_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}…" if hexpart else digest
