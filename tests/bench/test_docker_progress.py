"""BuildKit's plain progress read as steps (the `--compare docker` side), and the engine check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbuild.bench import docker

PLAIN = """\
#0 building with "default" instance using docker driver

#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 183B done
#1 DONE 0.0s

#2 [internal] load metadata for docker.io/library/busybox:latest
#2 DONE 0.9s

#3 [internal] load .dockerignore
#3 transferring context: 2B done
#3 DONE 0.0s

#4 [1/5] FROM docker.io/library/busybox:latest@sha256:ab
#4 CACHED

#5 [internal] load build context
#5 transferring context: 92B done
#5 DONE 0.0s

#6 [2/5] WORKDIR /app
#6 CACHED

#7 [3/5] COPY . /app
#7 DONE 0.1s

#8 [4/5] RUN cat requirements.txt > /deps
#8 0.212 some output
#8 DONE 0.4s

#9 [builder 5/5] RUN echo built > /built
#9 ERROR: process "/bin/sh -c echo built > /built" did not complete successfully: exit code: 1

#10 exporting to image
#10 DONE 0.1s
"""


def test_plain_progress_gives_each_step_hit_or_ran_with_its_time() -> None:
    steps = docker.parse_plain(PLAIN)
    assert [(s.stage, s.index, s.instruction, s.kind, s.cached, s.duration_s) for s in steps] == [
        ("", 0, "FROM docker.io/library/busybox:latest@sha256:ab", "base", True, 0.0),
        ("", 1, "WORKDIR /app", "meta", True, 0.0),
        ("", 2, "COPY . /app", "copy", False, 0.1),
        ("", 3, "RUN cat requirements.txt > /deps", "exec", False, 0.4),
    ]  # the failed step never finished: not a hit, not a run


def test_a_step_named_twice_is_one_step() -> None:
    text = "#7 [3/5] COPY . /app\n#8 [4/5] RUN x\n#7 [3/5] COPY . /app\n#7 CACHED\n#8 DONE 1.5s\n"
    steps = docker.parse_plain(text)
    assert [(s.instruction, s.cached, s.duration_s) for s in steps] == [("COPY . /app", True, 0.0),
                                                                       ("RUN x", False, 1.5)]


def test_without_an_engine_the_comparison_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, said = docker.engine()
    if ok:
        pytest.skip("a docker engine answers here")
    assert said.startswith(("no docker CLI", "no docker engine answers", "`docker info` did not answer"))
    result = docker.compare_docker(None, [], None, build_args={}, target=None)  # type: ignore[arg-type]
    assert not result.available and result.message.endswith("the comparison with BuildKit was skipped")
    assert result.to_json()["hit_rate"] is None


def test_the_comparison_runs_docker_build_per_commit_and_reads_its_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in `docker` on PATH (this machine has no engine): the replay calls `docker info`,
    then `docker build --progress plain -f DOCKERFILE CONTEXT` once per commit in the work tree, and
    the steps its output names land in the comparison (the parser is what the tests above check)."""
    from layerbuild.bench.git import Worktree, commits
    from layerbuild.bench.replay import Project
    from tests.bench.kit import make_history

    repo = tmp_path / "app"
    make_history(repo, [("one", {"Dockerfile": "FROM busybox\nCOPY a /a\n", "a": "1"}),
                        ("two", {"a": "2"})])
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f"""#!/bin/sh
echo "$DOCKER_BUILDKIT $*" >> {calls}
if [ "$1" = info ]; then echo 99.0; exit 0; fi
n=$(grep -c ' build ' {calls})
echo "#4 [1/2] FROM docker.io/library/busybox" >&2
echo "#4 CACHED" >&2
echo "#5 [2/2] COPY a /a" >&2
if [ "$n" -gt 1 ]; then echo "#5 CACHED" >&2; else echo "#5 DONE 0.2s" >&2; fi
""")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    found = commits(repo, last=2)
    with Worktree(repo, tmp_path / "tree", found[0].sha) as tree:
        result = docker.compare_docker(Project(repo), found, tree, build_args={"V": "1"}, target="t")
    assert result.available and result.message.startswith("docker engine 99.0")
    assert [[(s.instruction, s.cached) for s in c.steps if s.kind == "copy"] for c in result.commits] == [
        [("COPY a /a", False)], [("COPY a /a", True)]]
    lines = calls.read_text().splitlines()
    assert lines[0] == " info --format {{.ServerVersion}}"  # no DOCKER_BUILDKIT needed to ask
    tree_path = tmp_path / "tree"
    assert lines[1] == (f"1 build --progress plain -f {tree_path}/Dockerfile --build-arg V=1 --target t "
                        f"{tree_path}")
