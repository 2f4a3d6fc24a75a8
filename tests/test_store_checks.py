"""The after-test fsck of tests/conftest.py finds the stores a test leaves and sees what is wrong with them."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.digest import sha256_digest
from layerbuild.store import NO_RESULT, Store
from tests.conftest import fsck_problems, store_roots


@pytest.mark.store_corrupted
def test_the_after_test_check_finds_and_judges_stores(tmp_path: Path) -> None:
    with Store(tmp_path / "a") as good:
        good.index.put_cache("meta", "meta", NO_RESULT)  # a step that made no layer: valid
    with Store(tmp_path / "nested" / "deeper" / "b") as bad:
        info = bad.blobs.put(b"config")
        bad.index.put_image(info.digest, "config", "application/vnd.oci.image.config.v1+json", info.size, [])
        bad.index.set_tag("t:1", sha256_digest(b"a manifest never stored"))
    (tmp_path / "context" / "index.db").parent.mkdir()
    (tmp_path / "context" / "index.db").write_text("not a store: no blobs/ beside it")

    assert store_roots(tmp_path) == [tmp_path / "a", tmp_path / "nested" / "deeper" / "b"]
    assert fsck_problems(tmp_path / "a") == []
    problems = fsck_problems(tmp_path / "nested" / "deeper" / "b")
    assert len(problems) == 1 and "dangling tag: t:1" in problems[0]
    assert store_roots(tmp_path, depth=1) == [tmp_path / "a"]


@pytest.mark.store_corrupted
def test_the_after_test_check_reports_a_store_it_cannot_open(tmp_path: Path) -> None:
    root = tmp_path / "s"
    Store(root).close()
    (root / "index.db").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (root / f"index.db{suffix}").unlink(missing_ok=True)
    (problem,) = fsck_problems(root)
    assert "cannot open the store" in problem and "cannot be read" in problem
