"""A replay: every commit of a range checked out in a scratch work tree and built in order, with the
Dockerfile as it is at that commit or rewritten (a what-if), recording each step's outcome."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from layerbuild.bench.git import Commit, Worktree, changed_files
from layerbuild.bench.model import CommitOutcome, StepOutcome
from layerbuild.bench.runner import Runner
from layerbuild.errors import LayerbuildError

# A Dockerfile's text at a commit → the text to build instead (None: build it as it is), given the
# context directory (a rewrite may look at which files exist).
Rewrite = Callable[[str, Path], str | None]


@dataclass(frozen=True)
class Project:
    """What is built at every commit: the repository, the context in it and the Dockerfile's path in it."""

    repo: Path
    context: str = "."
    dockerfile: str | None = None

    @property
    def dockerfile_path(self) -> str:
        if self.dockerfile is not None:
            return self.dockerfile
        return "Dockerfile" if self.context in ("", ".") else f"{self.context.rstrip('/')}/Dockerfile"


@dataclass
class Progress:
    """Told what a replay does, for a progress bar: a commit starts, a step ends, a commit ends."""

    commit_started: Callable[[int, Commit], None] | None = None
    step_done: Callable[[StepOutcome], None] | None = None
    commit_done: Callable[[int, CommitOutcome], None] | None = None


def replay(project: Project, commits: Sequence[Commit], runner: Runner, tree: Worktree, scratch: Path, *,
           rewrite: Rewrite | None = None, progress: Progress | None = None,
           keep_last: Callable[[Path, CommitOutcome], None] | None = None) -> tuple[CommitOutcome, ...]:
    """Build every commit in order, checked out in `tree` (one work tree for every replay of a run, so
    that what a context holds of it, such as its `.git` file, is the same in each); `keep_last` is
    called with the store and outcome of the last commit (while its store still exists, for the
    what-if's image comparison)."""
    progress = progress or Progress()
    scratch.mkdir(parents=True, exist_ok=True)
    out: list[CommitOutcome] = []
    for n, commit, changed in checked_out(project, commits, tree, progress):
        outcome = _build_commit(project, commit, tree.path, runner, scratch, rewrite, progress, changed)
        out.append(outcome)
        if progress.commit_done is not None:
            progress.commit_done(n, outcome)
        if keep_last is not None and n == len(commits) - 1:
            keep_last(runner.last_root, outcome)
    return tuple(out)


def checked_out(project: Project, commits: Sequence[Commit], tree: Worktree,
                progress: Progress) -> Iterator[tuple[int, Commit, tuple[str, ...]]]:
    """Each commit in order, checked out in `tree` when it is yielded, with the files of the context
    it changed since the one before (told to `progress` as it starts)."""
    before = commits[0].parent
    for n, commit in enumerate(commits):
        if progress.commit_started is not None:
            progress.commit_started(n, commit)
        tree.checkout(commit.sha)
        try:
            changed = tuple(changed_files(project.repo, before, commit.sha, project.context))
        except LayerbuildError:
            changed = ()
        before = commit.sha
        yield n, commit, changed


def _build_commit(project: Project, commit: Commit, tree: Path, runner: Runner, scratch: Path,
                  rewrite: Rewrite | None, progress: Progress, changed: tuple[str, ...]) -> CommitOutcome:
    context = tree / project.context
    dockerfile = tree / project.dockerfile_path
    root = runner.store_for_next()
    if not dockerfile.is_file():
        return CommitOutcome(commit.sha, commit.subject, False, 0.0, changed, (),
                             error=f"no Dockerfile at {project.dockerfile_path} in this commit")
    text = dockerfile.read_text(encoding="utf-8", errors="surrogateescape")
    if rewrite is not None:
        new = rewrite(text, context)
        if new is not None:
            # Beside the context, not in it: the context stays as the commit has it. One path for
            # every commit, so each build's miss reasons compare with the last build of this file.
            dockerfile = scratch / "Dockerfile.rewritten"
            dockerfile.write_text(new, encoding="utf-8", errors="surrogateescape")
            text = new
    images = [v.removeprefix("docker-image://") for v in runner.build_contexts.values()
              if v.startswith("docker-image://")]
    runner.seed(root, [*base_refs(text, runner.build_args), *images])
    built = runner.build(context, dockerfile, root, on_step=progress.step_done, tree=tree)
    return CommitOutcome(commit.sha, commit.subject, built.ok, built.duration_s, changed, built.steps,
                         error=built.error, bytes_written=built.bytes_written, image=built.image)


_VAR = re.compile(r"\$(?:\{(\w+)(?::?[-+][^}]*)?\}|(\w+))")


def base_refs(text: str, build_args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile starts stages from or copies from (not its stages, not scratch), with
    global ARGs expanded from their defaults and `build_args`: what a scratch store must hold."""
    from layerbuild.parser import parse

    try:
        df = parse(text.encode("utf-8", "surrogateescape"))
    except LayerbuildError:
        return []
    args: dict[str, str] = {}
    stages: set[str] = set()
    refs: list[str] = []
    in_stage = False

    def expand(value: str) -> str:
        return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), ""), value)

    for ins in df.instructions:
        if ins.cmd == "arg" and not in_stage:
            for item in ins.value:
                name, eq, default = item.partition("=")
                args[name] = build_args.get(name, default if eq else args.get(name, ""))
        elif ins.cmd == "from" and ins.value:
            in_stage = True
            ref = expand(ins.value[0])
            if ref.lower() != "scratch" and ref.lower() not in stages:
                refs.append(ref)
            if len(ins.value) >= 3 and ins.value[1].lower() == "as":
                stages.add(ins.value[2].lower())
        elif ins.cmd in ("copy", "add"):
            for flag in ins.flags:
                if flag.startswith("--from="):
                    ref = expand(flag.split("=", 1)[1])
                    if not ref.isdigit() and ref.lower() not in stages:
                        refs.append(ref)
    return list(dict.fromkeys(refs))
