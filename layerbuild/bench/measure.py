"""`bench history`: replay a range of a repository's commits, compute the ideal, try the what-ifs and
compare with another builder; the library's entry point (the CLI verb is a skin over it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from layerbuild.bench.git import Worktree, repo_root
from layerbuild.bench.git import commits as list_commits
from layerbuild.bench.ideal import ideal
from layerbuild.bench.model import Comparison, HistoryReport, WhatIf
from layerbuild.bench.replay import Progress, Project, replay
from layerbuild.bench.runner import RUNNERS, Runner
from layerbuild.errors import UsageError
from layerbuild.store.layout import resolve_root

COMPARE = ("docker",)


def history(
    repo: str | os.PathLike[str] = ".",
    *,
    rev_range: str | None = None,
    last: int | None = None,
    dockerfile: str | None = None,
    context: str = ".",
    target: str | None = None,
    runner: str = "warm",
    build_args: Mapping[str, str] | None = None,
    build_contexts: Mapping[str, str] | None = None,
    cache_registry: str | None = None,
    jobs: int = 0,
    root: str | os.PathLike[str] | None = None,
    whatif: bool = True,
    compare: Iterable[str] = (),
    progress: Progress | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> HistoryReport:
    """Replay the commits of `repo` (`rev_range` `A..B`, else the `last` N, default 10) in a scratch work
    tree, building `dockerfile` (a path in the repository; default CONTEXT/Dockerfile) on `context` (a
    directory in the repository) at each, with the `runner`'s store: `warm` one store throughout,
    `ephemeral` an empty store per commit (importing and exporting the registry cache `cache_registry`
    when given). Base images are copied from the store at `root` (the user's), else pulled as a build
    pulls them. Then the ideal (misses a cache could not have avoided), with `whatif` the rewrites of
    the Dockerfile that raise the hit rate, each replayed over the same commits and checked to give the
    same image at the last one, and with `compare` ("docker") the same replay through a docker engine.

    `progress` is told of each commit and step; `on_phase` of each replay that starts (its name, its
    number of commits). A commit that fails to build is reported (`ok` False), never raised. Raises
    UsageError for bad arguments, a repository that is not one, or a range with no commits."""
    if runner not in RUNNERS:
        raise UsageError(f"unknown runner {runner!r}", hint="use warm or ephemeral")
    if cache_registry and runner != "ephemeral":
        raise UsageError("--cache-registry is for the ephemeral runner",
                         hint="a warm runner keeps its own store; give --runner ephemeral")
    unknown = sorted(set(compare) - set(COMPARE))
    if unknown:
        raise UsageError(f"unknown --compare {unknown[0]!r}", hint="use --compare docker")
    top = repo_root(Path(repo))
    if Path(context).is_absolute() or ".." in Path(context).parts:
        raise UsageError(f"context {context!r} is not a directory in the repository",
                         hint="give it relative to the repository's top, e.g. --context app")
    project = Project(top, context, dockerfile)
    commits = list_commits(top, rev_range=rev_range, last=last if last is not None or rev_range else 10)
    source = resolve_root(root)
    scratch = Path(tempfile.mkdtemp(prefix="layerbuild-bench-"))

    def make_runner(name: str) -> Runner:
        return Runner(runner, scratch / name, source_root=source, cache_registry=cache_registry,
                      build_args=dict(build_args or {}), target=target, jobs=jobs,
                      build_contexts=dict(build_contexts or {}))

    try:
        if on_phase is not None:
            on_phase("replay", len(commits))
        last_store: dict[str, object] = {}

        def keep(root_dir: Path, outcome: object) -> None:
            last_store["baseline"] = _snapshot(root_dir, outcome)

        with Worktree(top, scratch / "tree", commits[0].sha) as tree:
            if whatif:
                # Replays are compared by their seconds: one unrecorded build of the first commit first,
                # so that the replay measured first does not pay alone for cold disk and page caches.
                replay(project, commits[:1], make_runner("warm-up"), tree, scratch / "warm-up")
                shutil.rmtree(scratch / "warm-up", ignore_errors=True)
            outcomes = replay(project, commits, make_runner("baseline"), tree, scratch / "baseline",
                              progress=progress, keep_last=keep)
            whatifs: tuple[WhatIf, ...] = ()
            if whatif:
                from layerbuild.bench.whatif import what_ifs

                whatifs = what_ifs(project, commits, outcomes, last_store.get("baseline"), make_runner, tree,
                                   scratch, progress=progress, on_phase=on_phase)
            comparisons: list[Comparison] = []
            if "docker" in compare:
                from layerbuild.bench.docker import compare_docker

                comparisons.append(compare_docker(project, commits, tree, build_args=build_args or {},
                                                  target=target, progress=progress, on_phase=on_phase))
        return HistoryReport(repo=str(top), dockerfile=project.dockerfile_path, context=context, runner=runner,
                             target=target, commits=outcomes, ideal=ideal(outcomes), whatif=whatifs,
                             compare=tuple(comparisons))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _snapshot(root: Path, outcome: object) -> object:
    """What the what-if check compares: the last commit's image's files and config (None if it failed)."""
    from layerbuild.bench.imagecmp import snapshot

    image = getattr(outcome, "image", None)
    return snapshot(root, image) if image else None
