"""A generated git history of a small app on busybox, whose commits edit its sources, its dependencies,
its Dockerfile and a build arg's default, one of them breaking the build; and a store holding busybox."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

from layerbuild.image import import_rootfs
from layerbuild.store import Store
from tests.runtime.conftest import busybox_tar

DOCKERFILE = """\
FROM busybox
ARG VERSION={version}
WORKDIR /app
COPY . /app
RUN mkdir -p /deps && while read d; do echo "$d" > "/deps/$d"; done < requirements.txt \\
    && touch -t 200001010000 /deps /deps/* && sleep 1
RUN {build} > /built
LABEL version=$VERSION
"""
BROKEN = "RUN echo about to fail && exit 3\n"

# (subject, files written, files removed); the Dockerfile is `DOCKERFILE` formatted with `fmt`.
HISTORY: list[tuple[str, dict[str, str]]] = [
    ("first version", {"app.txt": "v1\n", "requirements.txt": "alpha\nbeta\n",
                       ".dockerignore": "notes.md\nDockerfile\n.dockerignore\n.git\n", "notes.md": "notes\n",
                       "Dockerfile": DOCKERFILE.format(version="1", build="echo built")}),
    ("edit the app's source", {"app.txt": "v2\n"}),
    ("edit the notes (ignored by .dockerignore)", {"notes.md": "more notes\n"}),
    ("add a dependency", {"requirements.txt": "alpha\nbeta\ngamma\n"}),
    ("change the build step", {"Dockerfile": DOCKERFILE.format(version="1", build="echo built again")}),
    ("bump the VERSION build arg", {"Dockerfile": DOCKERFILE.format(version="2", build="echo built again")}),
    ("break the build", {"Dockerfile": DOCKERFILE.format(version="2", build="echo built again") + BROKEN}),
    ("fix the build", {"Dockerfile": DOCKERFILE.format(version="2", build="echo built again")}),
]
# Warm runner, per commit: (cached, counted) of COPY . /app, RUN deps, RUN build; None: fails to build.
EXPECTED_WARM: list[tuple[int, int] | None] = [(0, 3), (0, 3), (3, 3), (0, 3), (2, 3), (1, 3), None, (3, 3)]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
           "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def make_history(repo: Path, history: list[tuple[str, dict[str, str]]] | None = None) -> list[str]:
    """The commits of `history` in a new repository at `repo`; their shas, oldest first."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shas = []
    for subject, files in history or HISTORY:
        for name, text in files.items():
            (repo / name).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", subject)
        shas.append(git(repo, "rev-parse", "HEAD").strip())
    return shas


def busybox_store(root: Path) -> Path:
    """A store at `root` whose image `busybox` is a static busybox."""
    with Store.open(root) as store:
        import_rootfs(store, io.BytesIO(busybox_tar()), "busybox")
    return root
