"""`build --dry-run` on real builds: nothing runs or is stored, and its answer is what the build then does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.store import Store
from tests.build.conftest import write
from tests.build.kit import make_base

APP = """\
FROM base:1
WORKDIR /app
COPY deps.txt .
RUN cp deps.txt /out/deps && echo ran >> /out/runs
COPY src/ ./src/
RUN cat src/app.txt > /out/app && echo ran >> /out/runs
ENV MODE=prod
"""


def _state(root: Path) -> tuple[int, int, list[str]]:
    with Store.open(root) as store:
        cache = len(store.index.list_cache())
        images = len(store.index.list_images())
        blobs = sorted(p.name for p in (root / "blobs" / "sha256").iterdir())
    return cache, images, blobs


def _answers(result: layerbuild.BuildResult) -> list[tuple[str, bool]]:
    return [(s.instruction, s.cached) for s in result.steps]


@pytest.fixture
def app(tmp_path: Path, root: Path) -> Path:
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "app"
    ctx.mkdir()
    write(ctx, {"Dockerfile": APP, "deps.txt": "a\n", "src/app.txt": "one\n"})
    return ctx


def test_dry_run_before_the_first_build_stores_nothing_and_matches_the_build(app: Path, root: Path) -> None:
    before = _state(root)
    dry = layerbuild.build(app, root=root, tags=["app:1"], dry_run=True)
    assert _state(root) == before
    assert dry.dry_run and dry.to_json()["dry_run"] is True and dry.to_json()["image"]["id"] is None
    reasons = {s.instruction: s.reason for s in dry.steps}
    assert reasons["WORKDIR /app"] == "no earlier build"
    assert reasons["COPY src/ ./src/"] == "runs: upstream step 0:1 `WORKDIR /app` runs"
    real = layerbuild.build(app, root=root, tags=["app:1"])
    assert _answers(dry) == _answers(real)
    assert set(dry.to_json()) == set(real.to_json()) | {"dry_run"}
    assert [set(s) for s in dry.to_json()["steps"]] == [set(s) for s in real.to_json()["steps"]]


def test_dry_run_after_an_edit_names_the_file_runs_nothing_and_matches_the_build(app: Path, root: Path) -> None:
    layerbuild.build(app, root=root, tags=["app:1"])
    (app / "src" / "app.txt").write_text("two\n")
    before = _state(root)
    dry = layerbuild.build(app, root=root, tags=["app:1"], dry_run=True)
    assert _state(root) == before
    reasons = {s.instruction: (s.cached, s.reason) for s in dry.steps}
    assert reasons["COPY deps.txt ."] == (True, None)
    assert reasons["COPY src/ ./src/"] == (False, "src/app.txt changed")
    run = "RUN cat src/app.txt > /out/app && echo ran >> /out/runs"
    assert reasons[run] == (False, "runs: upstream step 0:4 `COPY src/ ./src/` runs")
    real = layerbuild.build(app, root=root, tags=["app:1"])
    assert _answers(dry) == _answers(real)
    again = layerbuild.build(app, root=root, tags=["app:1"], dry_run=True)
    assert all(s.cached for s in again.steps)


def test_a_copy_after_a_miss_names_its_own_changed_sources(app: Path, root: Path) -> None:
    layerbuild.build(app, root=root, tags=["app:1"])
    (app / "deps.txt").write_text("b\n")
    (app / "src" / "app.txt").write_text("two\n")
    dry = layerbuild.build(app, root=root, tags=["app:1"], dry_run=True)
    reasons = {s.instruction: s.reason for s in dry.steps}
    assert reasons["COPY deps.txt ."] == "deps.txt changed"
    assert reasons["COPY src/ ./src/"] == ("runs: upstream step 0:2 `COPY deps.txt .` runs; "
                                           "its own sources: src/app.txt changed")
    real = layerbuild.build(app, root=root, tags=["app:1"])
    assert _answers(dry) == _answers(real)


def test_cli_dry_run_prints_each_step_and_writes_the_report(app: Path, root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    layerbuild.build(app, root=root, tags=["app:1"])
    (app / "deps.txt").write_text("b\n")
    report = tmp_path / "dry.json"
    code = main(["--root", str(root), "build", "--dry-run", "--report", str(report), str(app)])
    out = capsys.readouterr().out
    assert code == 0
    assert "META  [0 1] WORKDIR /app" in out
    assert "RUNS  [0 2] COPY deps.txt .  (deps.txt changed)" in out
    assert "dry run: 0 of 4 steps would hit the cache (0%), 4 would run" in out
    data = json.loads(report.read_text())
    assert data["dry_run"] is True and data["summary"]["executed"] == 4
