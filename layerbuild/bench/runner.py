"""Builds one commit as a CI runner would: `warm` keeps one store from commit to commit, `ephemeral`
starts every commit from an empty store (with the registry cache, when one is given, as a CI job
that imports and exports it). Base images come from the user's store, copied into each scratch store,
so a replay needs no network for what the user already has."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from layerbuild.api.build import build
from layerbuild.bench.model import StepOutcome
from layerbuild.errors import LayerbuildError
from layerbuild.solve.report import BuildEvent, StepReport

RUNNERS = ("warm", "ephemeral")


@dataclass(frozen=True)
class BuildOutcome:
    ok: bool
    duration_s: float
    steps: tuple[StepOutcome, ...]
    error: str | None
    bytes_written: int
    image: str | None


@dataclass
class Runner:
    """Where a replay's builds go. `scratch` is a directory of its own; `source_root` the user's store,
    where base images are taken from; `cache_registry` a registry cache reference for `ephemeral`."""

    kind: str
    scratch: Path
    source_root: Path | None = None
    cache_registry: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    jobs: int = 0
    build_contexts: Mapping[str, str] = field(default_factory=dict)
    _count: int = 0
    _seeded: set[str] = field(default_factory=set)

    last_root: Path = Path()

    def store_for_next(self) -> Path:
        """The store the next build goes to: the same one (warm) or a new, empty one (ephemeral)."""
        if self.kind == "warm":
            self.last_root = self.scratch / "store"
            return self.last_root
        self._count += 1
        previous = self.scratch / f"store-{self._count - 1}"
        shutil.rmtree(previous, ignore_errors=True)
        self._seeded.clear()
        self.last_root = self.scratch / f"store-{self._count}"
        return self.last_root

    def seed(self, root: Path, refs: Iterable[str]) -> None:
        """Copy the images `refs` from the user's store into `root` (each once per store); a ref the user's
        store lacks is left for the build to pull, as it would."""
        if self.source_root is None or not self.source_root.exists():
            return
        from layerbuild.image.protocol import copy_image
        from layerbuild.image.store_io import ImageNotFoundError
        from layerbuild.image.storeimage import StoreSink, store_image
        from layerbuild.store import Store

        wanted = [r for r in refs if r not in self._seeded]
        if not wanted:
            return
        with Store.open(self.source_root) as src, Store.open(root) as dst:
            for ref in wanted:
                self._seeded.add(ref)
                try:
                    image = store_image(src, ref)
                except (ImageNotFoundError, LayerbuildError):
                    continue  # not the user's: the build pulls it, as it would
                copy_image(image, StoreSink(dst, reuse=True, keep=True), tags=[ref])

    def build(self, context: Path, dockerfile: Path, root: Path,
              on_step: Callable[[StepOutcome], None] | None = None, tree: Path | None = None) -> BuildOutcome:
        """Build `dockerfile` on `context` into the store at `root`; a failure is an outcome, not an error."""
        steps: dict[tuple[str, int], StepOutcome] = {}
        order: list[tuple[str, int]] = []

        def listen(event: BuildEvent) -> None:
            if event.type in ("step.cached", "step.finished") and event.step is not None:
                outcome = _outcome(event.step)
                key = (outcome.stage, outcome.index)
                if key not in steps:
                    order.append(key)
                steps[key] = outcome
                if on_step is not None:
                    on_step(outcome)
            elif event.type == "step.failed" and event.step is not None:
                failed = _outcome(event.step)
                key = (failed.stage, failed.index)
                if key not in steps:
                    order.append(key)
                steps[key] = StepOutcome(failed.stage, failed.index, failed.instruction, failed.kind, False,
                                         _failed_reason(failed.reason, event.message), failed.duration_s, None)

        cache_from: list[str] = []
        cache_to: list[str] = []
        if self.kind == "ephemeral" and self.cache_registry:
            cache_from = [f"type=registry,ref={self.cache_registry}"]
            cache_to = [f"type=registry,ref={self.cache_registry},mode=max"]
        before = _size(root)
        started = time.monotonic()
        error = image = None
        ok = True
        try:
            result = build(context, dockerfile, build_args=dict(self.build_args), target=self.target,
                           on_event=listen, root=root, jobs=self.jobs, cache_from=cache_from, cache_to=cache_to,
                           build_contexts=dict(self.build_contexts))
            image = result.image.id
            # The report is the truth (a fast-path answer replays it): take its steps, in its order.
            by_key = {(s.stage, s.index): s for s in result.steps}
            for k, s in by_key.items():
                known = steps.get(k)
                steps[k] = _outcome(s, key=known.key if known else s.key)
                if k not in order:
                    order.append(k)
        except LayerbuildError as exc:
            ok = False
            # Named as the repository names it, not by the scratch work tree's path.
            error = exc.render().replace(f"{tree}/", "") if tree is not None else exc.render()
        duration = time.monotonic() - started
        ordered = tuple(sorted((steps[k] for k in order), key=_stage_order(order)))
        return BuildOutcome(ok, duration, ordered, error, max(0, _size(root) - before), image)


def _failed_reason(reason: str | None, message: str | None) -> str:
    last = (message or "").strip().splitlines()
    said = last[-1] if last else "failed"
    return f"{reason}; failed: {said}" if reason else f"failed: {said}"


def _stage_order(order: list[tuple[str, int]]) -> Callable[[StepOutcome], tuple[int, int]]:
    stages: dict[str, int] = {}
    for stage, _ in order:
        stages.setdefault(stage, len(stages))
    return lambda s: (stages[s.stage], s.index)


def _outcome(step: StepReport, key: str | None = None) -> StepOutcome:
    return StepOutcome(step.stage, step.index, step.instruction, step.kind, step.cached, step.reason,
                       step.duration_s, step.size, key if key is not None else step.key)


def _size(root: Path) -> int:
    """Bytes of the store's blobs (what builds write: layers, configs, manifests)."""
    blobs = root / "blobs"
    if not blobs.is_dir():
        return 0
    return sum(p.stat().st_size for p in blobs.rglob("*") if p.is_file())
