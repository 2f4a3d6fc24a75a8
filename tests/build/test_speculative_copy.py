"""A COPY from the context after a RUN is written ahead on the RUN's parent while the RUN runs
(Solver._speculate_next, WorkerExecutor.speculate): its layer is the one a build without the guess
makes, byte for byte, and the real COPY layer takes the guess's frames (all of them when the RUN
left the COPY's parents alone, all but the first group when it changed one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import layerbuild
from layerbuild.image.storeimage import store_image
from layerbuild.store import Store
from layerbuild.worker.executor import WorkerExecutor
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration

EPOCH = {"SOURCE_DATE_EPOCH": "1000"}  # the COPY layer's times clamped: two builds give the same bytes


def _context(ctx: Path, run: str) -> None:
    files = {f"data/d{i % 7}/f{i:04}.txt": f"file {i} " * (300 + i % 50) for i in range(700)}
    write(ctx, {"Dockerfile": BUSYBOX_BASE + f"WORKDIR /app\nRUN {run}\nENV X=1\nCOPY data/ ./data/\n", **files})


def _layers(root: Path) -> list[tuple[str, str, int]]:
    with Store.open(root) as store:
        return [(layer.digest, layer.diff_id, layer.size) for layer in store_image(store, "t").layers]


def _packs(root: Path, digest: str) -> list[str]:
    with Store.open(root) as store:
        recipe = store.blobs.recipe(digest)
        assert recipe is not None
        assert store.fsck().ok
        return [f.pack for f in recipe.frames]


@pytest.mark.parametrize("run, all_guessed", [("sleep 0.5", True), ("chmod 700 /app && sleep 0.5", False)])
def test_a_copy_after_a_run_builds_on_its_guess_and_makes_the_same_image(
    bb_ctx: Path, tmp_path: Path, monkeypatch: Any, run: str, all_guessed: bool
) -> None:
    _context(bb_ctx, run)
    guessed, plain = tmp_path / "guessed", tmp_path / "plain"
    calls: list[str] = []
    speculate = WorkerExecutor.speculate

    def counted(self: WorkerExecutor, op: Any, inputs: Any) -> Any:
        task = speculate(self, op, inputs)
        if task is not None:
            calls.append(repr(op.sources))
        return task

    monkeypatch.setattr(WorkerExecutor, "speculate", counted)
    layerbuild.build(bb_ctx, root=guessed, tags=["t"], build_args=EPOCH)
    assert "('data/',)" in calls
    monkeypatch.setattr(WorkerExecutor, "speculate", lambda self, op, inputs: None)
    layerbuild.build(bb_ctx, root=plain, tags=["t"], build_args=EPOCH)
    # The COPY layer's digest, diff_id and size: the same (the RUN layers' own times differ).
    assert _layers(guessed)[-1] == _layers(plain)[-1]
    copy_layer = _layers(guessed)[-1][0]
    packs = _packs(guessed, copy_layer)
    assert len(packs) > 3
    if all_guessed:  # every frame is the guess's, skipped unread: the guess's layer is this one
        assert set(packs) == {copy_layer}
    else:  # /app changed below: the first group is new, the rest lie in the guess's blob
        assert packs[0] != packs[1] and set(packs[1:]) == {packs[1]} and packs[1] != copy_layer
    assert _packs(plain, copy_layer) == [copy_layer] * len(packs)  # written in one piece
