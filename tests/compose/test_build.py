"""`compose build` of real projects built from the busybox base: every image exists under its name,
a stage two services share is built once, independent services build in parallel lanes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.compose.build import lanes, plan
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.compose.kit import load, write
from tests.conftest import busybox_binary

DOCKERFILE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /app && echo shared > /app/base.txt

FROM base AS api
ARG GREETING=hello
RUN echo "$GREETING from api" > /app/api.txt

FROM base AS worker
RUN echo worker > /app/worker.txt
"""

COMPOSE = """\
name: shop
services:
  api:
    build:
      context: .
      target: api
      args: [GREETING=hi]
  worker:
    image: shop/worker:1
    build:
      context: .
      target: worker
  tools:
    build:
      context: tools
      dockerfile_inline: |
        FROM scratch
        COPY busybox /bin/busybox
        RUN ["/bin/busybox", "echo", "tools"]
  db:
    image: postgres:16
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "shop"
    write(project, {"Dockerfile": DOCKERFILE, "compose.yaml": COMPOSE})
    (project / "tools").mkdir()
    shutil.copy(busybox_binary(), project / "busybox")
    shutil.copy(busybox_binary(), project / "tools" / "busybox")
    return project


def test_plan_tags_lanes_and_arguments(tmp_path: Path) -> None:
    project = load(_project(tmp_path))
    builds = {b.service: b for b in plan(project, build_args={"EXTRA": "1"})}
    assert sorted(builds) == ["api", "tools", "worker"]  # db has no build:
    assert builds["api"].tags == ("shop-api",) and builds["worker"].tags == ("shop/worker:1",)
    assert builds["api"].build_args == {"GREETING": "hi", "EXTRA": "1"} and builds["api"].target == "api"
    assert builds["tools"].inline is not None and builds["tools"].dockerfile is None
    grouped = sorted(sorted(b.service for b in lane) for lane in lanes(list(builds.values())))
    assert grouped == [["api", "worker"], ["tools"]]  # one Dockerfile, one lane: the base is built once


def test_plan_refuses_unknown_services(tmp_path: Path) -> None:
    from layerbuild.errors import UsageError

    with pytest.raises(UsageError, match="no such service: nope"):
        plan(load(_project(tmp_path)), ["nope"])


@pytest.mark.integration
@pytest.mark.slow
def test_compose_build_builds_every_service_and_the_shared_stage_once(
        tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path)
    root = tmp_path / "store"
    monkeypatch.chdir(project)
    code = main(["--root", str(root), "compose", "build", "--progress", "json", "--build-arg", "GREETING=howdy"])
    out, err = capfd.readouterr()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["service"] for e in events} == {"api", "worker", "tools"}
    base_runs = [e for e in events if e.get("stage") == "base" and e.get("kind") == "exec"
                 and e["event"] in ("step.finished", "step.cached")]
    executed = [(e["service"], e["index"]) for e in base_runs if e["event"] == "step.finished"]
    cached = [(e["service"], e["index"]) for e in base_runs if e["event"] == "step.cached"]
    # two RUN steps in the base stage: each executed by one service, found in the cache by the other
    assert len(executed) == 2 and len({s for s, _ in executed}) == 1, executed
    assert len(cached) == 2 and {s for s, _ in cached} == {"api", "worker"} - {executed[0][0]}, cached
    with Store.open(root) as store:
        for name in ("shop-api", "shop/worker:1", "shop-tools"):
            assert resolve_image(store, name) is not None, name
    code = main(["--root", str(root), "run", "--rm", "shop-api", "cat", "/app/api.txt", "/app/base.txt"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out == "howdy from api\nshared\n"  # --build-arg wins over the file's args

    # a second build of one service is all hits, and its plain progress is prefixed with the service
    code = main(["--root", str(root), "compose", "build", "--progress", "plain", "worker"])
    out, err = capfd.readouterr()
    assert code == 0, err
    lines = [line for line in err.splitlines() if "CACHED" in line]
    assert lines and all(line.startswith("worker  | ") for line in lines)
    assert "worker  built" in err and "hit rate 100%" in err


@pytest.mark.integration
def test_a_failing_service_build_names_the_service(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "p"
    write(project, {"compose.yaml": "services:\n  broken:\n    build: .\n", "Dockerfile": "FROM scratch\nBOGUS x\n"})
    monkeypatch.chdir(project)
    code = main(["--root", str(tmp_path / "store"), "compose", "build", "--progress", "quiet"])
    _, err = capfd.readouterr()
    assert code == 1 and "service 'broken'" in err and "Traceback" not in err


def test_lanes_join_dockerfiles_whose_stages_open_alike(tmp_path: Path) -> None:
    opening = 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    write(tmp_path, {
        "api.Dockerfile": opening + "RUN echo api\n",
        "worker.Dockerfile": opening + "RUN echo worker\n",
        "other/Dockerfile": opening + "RUN echo other\n",  # the same text, another context: nothing shared
        "pip-a/Dockerfile": "FROM python:3.12\nRUN pip install flask\nCOPY . .\n",
        "pip-b/Dockerfile": "FROM python:3.12\nRUN pip install flask\nCOPY app.py .\n",
        "compose.yaml": (
            "services:\n"
            "  api: {build: {context: ., dockerfile: api.Dockerfile}}\n"
            "  worker: {build: {context: ., dockerfile: worker.Dockerfile}}\n"
            "  other: {build: other}\n  pip-a: {build: pip-a}\n  pip-b: {build: pip-b}\n"),
    })
    grouped = sorted(sorted(b.service for b in lane) for lane in lanes(plan(load(tmp_path))))
    assert grouped == [["api", "worker"], ["other"], ["pip-a", "pip-b"]]


@pytest.mark.integration
@pytest.mark.slow
def test_service_contexts_inline_dockerfiles_and_build_secrets(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "p"
    write(project, {
        "base/Dockerfile": 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n',
        "token.txt": "t0ken\n",
        "compose.yaml": (
            "services:\n"
            "  app:\n"
            "    build:\n"
            "      context: app\n"
            "      additional_contexts: {base: 'service:base'}\n"
            "      secrets: [token]\n"
            "      dockerfile_inline: |\n"
            "        FROM base\n"
            "        RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /size\n"
            "  base:\n"
            "    image: p/base:1\n"
            "    build: base\n"
            "secrets:\n  token: {file: ./token.txt}\n"),
    })
    (project / "app").mkdir()
    shutil.copy(busybox_binary(), project / "base" / "busybox")
    monkeypatch.chdir(project)
    root = tmp_path / "store"
    code = main(["--root", str(root), "compose", "build", "--progress", "json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    finished = [json.loads(line)["service"] for line in out.splitlines() if '"build.finished"' in line]
    assert finished == ["base", "app"]  # the service context is built first
    code = main(["--root", str(root), "run", "--rm", "p-app", "cat", "/size"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert out.strip() == "6"  # the secret was mounted, and is not in the image:
    code = main(["--root", str(root), "run", "--rm", "p-app", "ls", "/run/secrets"])
    out, _ = capfd.readouterr()
    assert "token" not in out


@pytest.mark.integration
@pytest.mark.slow
def test_the_shop_sample_builds_its_shared_base_once(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import REPO

    sample = tmp_path / "shop"
    shutil.copytree(REPO / "samples" / "shop", sample, ignore=shutil.ignore_patterns("busybox"))
    shutil.copy(busybox_binary(), sample / "app" / "busybox")
    monkeypatch.chdir(sample)
    root = tmp_path / "store"
    code = main(["--root", str(root), "compose", "build", "--progress", "json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    base_execs = [e for e in events if e.get("stage") == "base" and e["event"] == "step.finished"
                  and e["kind"] == "exec"]
    assert len(base_execs) == 2 and len({e["service"] for e in base_execs}) == 1  # two RUN steps, run once
    code = main(["--root", str(root), "run", "--rm", "shop-frontend", "cat", "/srv/www/index.html"])
    out, err = capfd.readouterr()
    assert code == 0 and "the shop front end" in out, err
    code = main(["--root", str(root), "images", "--json"])
    out, _ = capfd.readouterr()
    names = {f"{i['name']}:{i['tag']}" for i in json.loads(out)}
    assert {"shop-frontend:latest", "shop-api:latest", "shop-worker:latest"} <= names


@pytest.mark.integration
def test_build_cache_from_and_cache_to_reach_the_builds(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's `build.cache_to` exports its steps (a local cache directory, relative to the project)
    and `cache_from` reads them: a second runner's empty store hits every step of the service."""
    project = tmp_path / "p"
    write(project, {
        "Dockerfile": ('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                       "RUN echo cached > /out.txt\n"),
        "compose.yaml": ("services:\n"
                         "  app:\n"
                         "    build:\n"
                         "      context: .\n"
                         "      cache_from: ['type=local,src=ci-cache']\n"
                         "      cache_to: ['type=local,dest=ci-cache']\n"),
    })
    shutil.copy(busybox_binary(), project / "busybox")
    monkeypatch.chdir(tmp_path)  # not the project: the cache directory is the project's
    compose = ["compose", "-f", str(project / "compose.yaml"), "build", "--progress", "json"]
    code = main(["--root", str(tmp_path / "runner1"), *compose])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert (project / "ci-cache" / "index.json").exists(), sorted(p.name for p in project.iterdir())
    code = main(["--root", str(tmp_path / "runner2"), *compose])
    out, err = capfd.readouterr()
    assert code == 0, err
    steps = [json.loads(line) for line in out.splitlines() if '"step.' in line]
    work = [e for e in steps if e.get("kind") in ("exec", "copy") and e["event"] in ("step.cached", "step.finished")]
    assert len(work) == 3 and all(e["event"] == "step.cached" for e in work), work
    code = main(["--root", str(tmp_path / "runner2"), "run", "--rm", "p-app", "cat", "/out.txt"])
    out, err = capfd.readouterr()
    assert (code, out) == (0, "cached\n"), err


def test_build_cache_specs_are_planned(tmp_path: Path) -> None:
    write(tmp_path, {"compose.yaml": ("services:\n  app:\n    build:\n      context: .\n"
                                      "      cache_from: [reg.example/app:cache, 'type=local,src=c']\n"
                                      "      cache_to: ['type=registry,ref=reg.example/app:cache,mode=max']\n")})
    (b,) = plan(load(tmp_path))
    assert b.cache_from == ("reg.example/app:cache", f"type=local,src={tmp_path / 'c'}")
    assert b.cache_to == ("type=registry,ref=reg.example/app:cache,mode=max",)
