"""The malformed-input corpus through the CLI, in-process: every case fails with a clear message (never
"internal error" or a traceback), and what the store held before is still there and consistent."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.store import Store
from tests.conftest import fsck_problems
from tests.malformed.corpus import BAD_MARKERS, Case, World, archive_cases, argv_of, flag_cases, store_cases

# Cases that may succeed: the damage misses what the format needs (a truncation or flip in the tar's
# end padding loads the same image), the input is odd but harmless, or the store damage spares the
# command (df on a store whose blobs are gone).
MAY_SUCCEED = {
    "flags:save-o-missing-dir",  # the directories are made, as for --output
    "flags:build-no-cache-filter-unknown",  # BuildKit ignores unknown stage names here too
    "flags:import-stdin-empty",  # an empty tar: an image with one empty layer, like docker import
}


def run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = World.make(tmp_path_factory.mktemp("corpus") / "w", lambda argv: run_cli(argv)[::2])
    yield world


def _image_ids(root: Path) -> dict[str, str]:
    with Store(root) as store:
        return {tag.name: tag.digest for tag in store.index.list_tags()}


def _fingerprint(root: Path) -> str:
    db = root / "index.db"
    return hashlib.sha256(db.read_bytes()).hexdigest() if db.is_file() else "not a file"


def _judge(world: World, case: Case, code: int, out: str, err: str, good_id: str) -> str | None:
    """What is wrong with the outcome of `case`, or None."""
    if any(marker in err for marker in BAD_MARKERS):
        return f"crashed: {err.strip()[:300]}"
    if code == 0:
        if case.id in MAY_SUCCEED or case.group == "store":
            return None
        if case.group == "load" and good_id in out:  # the damage missed everything load reads
            return None
        return f"accepted (exit 0): {out.strip()[:200]}"
    if case.argv[:1] == ("fsck",):
        return None if "problem" in out and err.strip() else f"fsck did not diagnose: {out} {err}"
    if "error" not in err:
        return f"no error message: {err.strip()[:300]}"
    return None


@pytest.mark.parametrize("group", ["load", "import", "add", "flags"])
def test_malformed_input_fails_clearly_and_leaves_the_store_as_it_was(world: World, group: str) -> None:
    cases = [c for c in archive_cases(world) + flag_cases(world) if c.group == group]
    assert len(cases) >= 5
    before = _image_ids(world.root)
    good_id = json.loads(run_cli(["--root", str(world.root), "images", "--json"])[1])[0]["id"]
    problems = []
    for case in cases:
        code, out, err = run_cli(argv_of(world, case))
        wrong = _judge(world, case, code, out, err, good_id)
        if wrong:
            problems.append(f"{case.id}: {wrong}")
        after = _image_ids(world.root)
        if {k: v for k, v in after.items() if k in before} != before:
            problems.append(f"{case.id}: the store's tags changed: {before} -> {after}")
    assert not problems, "\n".join(problems)
    assert fsck_problems(world.root) == []


@pytest.mark.store_corrupted
def test_a_damaged_store_gives_clear_errors_and_fsck_diagnoses_it(world: World) -> None:
    cases = store_cases(world)
    problems = []
    for case in cases:
        assert case.root is not None
        before = _fingerprint(case.root)
        code, out, err = run_cli(argv_of(world, case))
        wrong = _judge(world, case, code, out, err, "")
        if wrong:
            problems.append(f"{case.id}: {wrong}")
        unreadable = case.name.split(":")[0] in ("index-truncated", "index-zeroed", "index-garbage", "index-header-only")
        if unreadable and _fingerprint(case.root) != before:
            problems.append(f"{case.id}: the damaged index.db was changed (nothing may be lost before a repair)")
    assert not problems, "\n".join(problems)
    # fsck ran on every damaged store (and _judge checked it said what it found).
    assert {c.root for c in cases if c.argv[:1] == ("fsck",)} == {c.root for c in cases}
