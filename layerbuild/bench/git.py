"""The git side of a replay: which commits, what each changed, and a scratch work tree to check them out in.

Everything goes through the `git` command (as a CI runner checks a project out); the user's own
checkout is never touched: commits are checked out in a detached work tree under a scratch directory,
removed at the end.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerbuild.errors import LayerbuildError, UsageError


class GitError(LayerbuildError):
    """A git command failed (not a repository, an unknown revision, no git)."""


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    parent: str | None


def git(repo: Path, *args: str) -> str:
    """`git -C repo ARGS...`'s standard output; GitError with git's own words if it fails."""
    if shutil.which("git") is None:
        raise GitError("git is not installed", hint="install git (apt-get install git)")
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False,
                          env=_env())
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or f'exit status {proc.returncode}'}")
    return proc.stdout


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    return env


def repo_root(path: Path) -> Path:
    """The top of the work tree `path` is in; UsageError if it is not in a git repository."""
    try:
        return Path(git(path, "rev-parse", "--show-toplevel").strip())
    except GitError as exc:
        raise UsageError(f"{str(path)!r} is not a git repository: {exc.message}",
                         hint="give the path of a git checkout (a clone with its history)") from None


def commits(repo: Path, *, rev_range: str | None = None, last: int | None = None) -> list[Commit]:
    """The commits to replay, oldest first, along the first-parent line (what a CI on the main branch
    built): `rev_range` as `A..B` (A excluded, as git means it), else the `last` N of HEAD."""
    if rev_range is not None and last is not None:
        raise UsageError("give --rev-range or --last, not both")
    spec = [rev_range] if rev_range else ["HEAD"]
    limit = ["--max-count", str(last)] if last is not None else []
    if last is not None and last < 1:
        raise UsageError(f"--last {last}: give a number of commits, 1 or more")
    try:
        out = git(repo, "log", "--first-parent", "--format=%H%x00%P%x00%s", *limit, *spec, "--")
    except GitError as exc:
        raise UsageError(f"cannot list the commits {' '.join(spec)}: {exc.message}",
                         hint="name a range of this repository (e.g. --rev-range v1.0..main) or use --last N") from None
    found = []
    for line in out.splitlines():
        sha, parents, subject = line.split("\0", 2)
        found.append(Commit(sha, subject, parents.split()[0] if parents.split() else None))
    if not found:
        raise UsageError(f"no commits in {' '.join(spec)}")
    return list(reversed(found))


def changed_files(repo: Path, before: str | None, after: str, under: str = ".") -> list[str]:
    """Files that differ between `before` and `after` (every file of `after` when `before` is None),
    limited to `under` and named relative to it (the build context's view)."""
    scope = "" if under in ("", ".") else under.rstrip("/") + "/"
    if before is None:
        out = git(repo, "ls-tree", "-r", "--name-only", after, "--", scope or ".")
    else:
        out = git(repo, "diff", "--name-only", "--no-renames", before, after, "--", scope or ".")
    return sorted(name[len(scope):] for name in out.splitlines() if name)


class Worktree:
    """A detached work tree of `repo` at `path`, moved from commit to commit; removed by `close`."""

    def __init__(self, repo: Path, path: Path, first: str) -> None:
        self.repo = repo
        self.path = path
        git(repo, "worktree", "add", "--detach", "--force", str(path), first)

    def checkout(self, sha: str) -> None:
        git(self.path, "checkout", "--force", "--quiet", "--detach", sha)
        git(self.path, "clean", "-fdxq")

    def close(self) -> None:
        try:
            git(self.repo, "worktree", "remove", "--force", str(self.path))
        except GitError:
            shutil.rmtree(self.path, ignore_errors=True)
            git(self.repo, "worktree", "prune")

    def __enter__(self) -> Worktree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
