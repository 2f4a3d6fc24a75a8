"""`--compare docker`: the same replay through a docker engine's BuildKit, hits read from its plain
progress (`#N CACHED`); skipped, saying why, when no engine answers `docker info`."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from layerbuild.bench.git import Commit, Worktree
from layerbuild.bench.model import CommitOutcome, Comparison, StepOutcome
from layerbuild.bench.replay import Progress, Project, checked_out

_HEAD = re.compile(r"^#(\d+) \[(?:(?P<stage>[^\]\s]+) )?(?P<pos>\d+)/(?P<of>\d+)\] (?P<ins>.*)$")
_CACHED = re.compile(r"^#(\d+) CACHED\s*$")
_DONE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s\s*$")
_ERROR = re.compile(r"^#(\d+) ERROR")
KINDS = {"RUN": "exec", "COPY": "copy", "ADD": "copy", "FROM": "base"}


def engine() -> tuple[bool, str]:
    """Whether a docker engine answers, and in words what was found."""
    if shutil.which("docker") is None:
        return False, "no docker CLI on this machine"
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`docker info` did not answer: {exc}"
    if proc.returncode != 0 or not proc.stdout.strip():
        first = (proc.stderr.strip().splitlines() or ["no answer"])[0]
        return False, f"no docker engine answers (`docker info`: {first})"
    return True, f"docker engine {proc.stdout.strip()}"


def parse_plain(text: str) -> tuple[StepOutcome, ...]:
    """BuildKit's `--progress plain` output as steps: `#N [stage i/n] INSTRUCTION` names a step,
    `#N CACHED` says it hit, `#N DONE 1.2s` that it ran (for that long), `#N ERROR` that it failed.
    Internal vertices (`[internal] load ...`, exporting) are not steps."""
    heads: dict[str, tuple[str, int, str]] = {}
    cached: set[str] = set()
    done: dict[str, float] = {}
    order: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        m = _HEAD.match(line)
        if m:
            vid = line.split(" ", 1)[0][1:]
            if vid not in heads:
                order.append(vid)
            heads[vid] = (m.group("stage") or "", int(m.group("pos")), m.group("ins").strip())
            continue
        m2 = _CACHED.match(line)
        if m2:
            cached.add(m2.group(1))
            continue
        m3 = _DONE.match(line)
        if m3:
            done[m3.group(1)] = float(m3.group(2))
    steps = []
    for vid in order:
        stage, pos, ins = heads[vid]
        if vid not in cached and vid not in done:
            continue  # never finished (a failed build stops the rest)
        keyword = ins.split(" ", 1)[0].upper()
        kind = KINDS.get(keyword, "meta")
        steps.append(StepOutcome(stage, pos - 1, ins, kind, vid in cached, None if vid in cached else "ran",
                                 done.get(vid, 0.0), None))
    return tuple(steps)


def compare_docker(project: Project, commits: Sequence[Commit], tree: Worktree, *, build_args: Mapping[str, str],
                   target: str | None, progress: Progress | None = None,
                   on_phase: Callable[[str, int], None] | None = None) -> Comparison:
    ok, found = engine()
    if not ok:
        return Comparison("docker", False, f"{found}: the comparison with BuildKit was skipped")
    if on_phase is not None:
        on_phase("docker", len(commits))
    progress = progress or Progress()
    out: list[CommitOutcome] = []
    for n, commit, changed in checked_out(project, commits, tree, progress):
        # `docker build` is BuildKit on every engine that has it (DOCKER_BUILDKIT=1 for the older ones),
        # with or without the buildx plugin; the image stays in the engine, as a CI build's would.
        argv = ["docker", "build", "--progress", "plain", "-f", str(tree.path / project.dockerfile_path)]
        for k, v in build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        if target:
            argv += ["--target", target]
        started = time.monotonic()
        proc = subprocess.run([*argv, str(tree.path / project.context)], capture_output=True, text=True,
                              check=False, env={**_env(), "DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"})
        duration = time.monotonic() - started
        steps = parse_plain(proc.stderr + proc.stdout)
        error = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]
        outcome = CommitOutcome(commit.sha, commit.subject, proc.returncode == 0, duration, changed, steps,
                                error=error)
        out.append(outcome)
        if progress.commit_done is not None:
            progress.commit_done(n, outcome)
    return Comparison("docker", True, f"{found}, BuildKit through `docker build --progress plain`",
                      tuple(out))


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
