"""What-if: each rewrite of the Dockerfile (rewrites) that applies is replayed over the same commits as
the Dockerfile as it is, for its measured hit rate and seconds saved; a rewrite whose image at the last
commit differs from the real one in files or config (or that breaks a commit that built) is rejected."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from layerbuild.bench import rewrites
from layerbuild.bench.git import Commit, Worktree, git
from layerbuild.bench.imagecmp import Snapshot, differences, snapshot
from layerbuild.bench.model import CommitOutcome, Totals, WhatIf
from layerbuild.bench.replay import Progress, Project, Rewrite, replay
from layerbuild.bench.runner import Runner
from layerbuild.errors import LayerbuildError

MAX_CANDIDATES = 5
Candidate = tuple[str, str, Rewrite]  # rule, description, rewrite


def dockerfiles(project: Project, commits: Sequence[Commit]) -> list[str]:
    """The Dockerfile's text at each commit (commits without one left out)."""
    out = []
    for c in commits:
        try:
            out.append(git(project.repo, "show", f"{c.sha}:{project.dockerfile_path}"))
        except LayerbuildError:
            continue
    return out


def candidates(texts: Sequence[str], context: Path, baseline: Sequence[CommitOutcome]) -> list[Candidate]:
    """The rewrites worth replaying, judged on the last Dockerfile (the one whose image is compared)."""
    if not texts:
        return []
    last = texts[-1]
    found: list[Candidate] = []
    said = rewrites.split_copy_applies(last, context)
    if said is not None:
        found.append(("split-copy", said, rewrites.split_copy))
    for ident in rewrites.changing_meta(texts):
        rewrite = rewrites.move_later(ident)
        if rewrite(last, context) is not None:
            what = f"{ident[0].upper()} {' '.join(ident[1:])}"
            found.append(("move-later", f"move `{what}` (it changes between commits) down to where it is used",
                          rewrite))
    cost: dict[str, float] = {}
    for commit in baseline:
        for step in commit.steps:
            if not step.cached and step.kind == "exec":
                cost[step.instruction] = cost.get(step.instruction, 0.0) + step.duration_s
    early = rewrites.earlier_candidates(last, context)
    for run in sorted(early, key=lambda r: -cost.get(_short(r), cost.get(r, 0.0)))[:2]:
        found.append(("move-earlier", f"move `{_short(run, 60)}` above the copies it does not read",
                      rewrites.move_earlier(run)))
    return found[:MAX_CANDIDATES]


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def what_ifs(project: Project, commits: Sequence[Commit], baseline: Sequence[CommitOutcome],
             reference: object, make_runner: Callable[[str], Runner], tree: Worktree, scratch: Path, *,
             progress: Progress | None = None, on_phase: Callable[[str, int], None] | None = None,
             ) -> tuple[WhatIf, ...]:
    texts = dockerfiles(project, commits)
    context = scratch / "last-context"
    _export_context(project, commits[-1], context)
    found = candidates(texts, context / project.context, baseline)
    out = []
    for n, (rule, description, rewrite) in enumerate(found):
        if on_phase is not None:
            on_phase(f"what-if {n + 1}/{len(found)}: {rule}", len(commits))
        kept: dict[str, Snapshot | None] = {}

        def keep(root: Path, outcome: CommitOutcome, kept: dict[str, Snapshot | None] = kept) -> None:
            kept["last"] = snapshot(root, outcome.image) if outcome.ok and outcome.image else None

        name = f"whatif-{n + 1}"
        outcomes = replay(project, commits, make_runner(name), tree, scratch / name, rewrite=rewrite,
                          progress=progress, keep_last=keep)
        new_text = rewrite(texts[-1], context / project.context) or texts[-1]
        totals = Totals.of(outcomes)
        both = [(a, b) for a, b in zip(baseline, outcomes, strict=True) if a.ok and b.ok]
        saved = sum(a.duration_s - b.duration_s for a, b in both)
        rejected = _rejected(baseline, outcomes, reference, kept.get("last"))
        out.append(WhatIf(rule, description, new_text, totals.hit_rate, saved if not rejected else 0.0,
                          totals.duration_s, accepted=rejected is None, rejected=rejected, commits=outcomes))
    return tuple(sorted(out, key=lambda w: (not w.accepted, -w.saved_s)))


def _rejected(baseline: Sequence[CommitOutcome], outcomes: Sequence[CommitOutcome], reference: object,
              last: Snapshot | None) -> str | None:
    broken = [b.commit[:12] for a, b in zip(baseline, outcomes, strict=True) if a.ok and not b.ok]
    if broken:
        return f"the rewrite does not build at {', '.join(broken[:3])}"
    if not isinstance(reference, Snapshot) or last is None:
        return "no image at the last commit to compare with"
    diff = differences(reference, last)
    if diff:
        return "the image differs: " + "; ".join(diff)
    return None


def _export_context(project: Project, commit: Commit, dest: Path) -> None:
    """The last commit's files (to see which manifests exist), from git's archive, not the user's tree."""
    import io
    import subprocess
    import tarfile

    dest.mkdir(parents=True, exist_ok=True)
    data = subprocess.run(["git", "-C", str(project.repo), "archive", "--format=tar", commit.sha],
                          capture_output=True, check=False).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
