"""Container names: taking a name is atomic, however many processes ask for it at the same moment."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from layerbuild.errors import UsageError
from layerbuild.runtime import containers

pytestmark = pytest.mark.integration  # real processes, all at once
RACERS = 12


def _race(root: Path, barrier: Any, results: Any) -> None:
    barrier.wait()  # all at once: the window between "is the name free" and "take it"
    try:
        containers.create(root, name="x", image="img", image_id="sha256:0", argv=["true"], config={})
        results.put("won")
    except UsageError as exc:
        results.put(str(exc))


def test_simultaneous_creates_of_one_name_have_one_winner(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(8):
        root = tmp_path / f"r{round_}"
        barrier, results = ctx.Barrier(RACERS), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(root, barrier, results)) for _ in range(RACERS)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert outcomes.count("won") == 1, outcomes
        assert all(o == "won" or 'the container name "x" is already in use' in o for o in outcomes)
        assert [c.name for c in containers.list_all(root)] == ["x"]


def test_a_name_is_free_again_once_its_container_is_removed(tmp_path: Path) -> None:
    first = containers.create(tmp_path, name="x", image="img", image_id="sha256:0", argv=["true"], config={})
    doomed = first.dir.with_name(first.dir.name + ".removing")
    first.dir.rename(doomed)  # what remove() does first: a half-removed container holds no name
    second = containers.create(tmp_path, name="x", image="img", image_id="sha256:0", argv=["true"], config={})
    assert [c.id for c in containers.list_all(tmp_path)] == [second.id]
