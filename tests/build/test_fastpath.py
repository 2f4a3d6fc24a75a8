"""The no-op fast path answers only when nothing the build reads has changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.store import Store
from layerbuild.worker import fastpath
from tests.build.conftest import write

DOCKERFILE = "FROM scratch\nCOPY a.txt /a.txt\nCOPY dir/ /dir/\n"


def build(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["--root", str(root), "build", "--progress", "plain", *extra, "-t", "fp:1", str(ctx)]) == 0
    return capsys.readouterr().err


def setup(ctx: Path) -> None:
    write(ctx, {"Dockerfile": DOCKERFILE, "a.txt": "a", "dir/b.txt": "b", ".dockerignore": "dir/skip\n",
                "dir/skip/x": "ignored"})


def test_noop_is_answered_and_reports_hits(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    setup(ctx)
    build(ctx, root, capsys)
    calls: list[object] = []
    import layerbuild.worker.build as full

    monkeypatch.setattr(full, "run_build", lambda *a, **k: calls.append(a))  # must not be reached
    out = build(ctx, root, capsys)
    assert calls == []
    assert "COPY a.txt /a.txt  CACHED" in out and "hit rate 100%" in out


def test_a_touched_file_takes_the_full_path_which_still_hits(ctx: Path, root: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    setup(ctx)
    build(ctx, root, capsys)
    later = time.time() + 50
    os.utime(ctx / "a.txt", (later, later))
    out = build(ctx, root, capsys)
    assert "hit rate 100%" in out


def test_an_edit_is_seen(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(ctx)
    first = build(ctx, root, capsys)
    # --progress plain starts with the plan, then one line per step.
    assert first.startswith("stage 0 from scratch [target]\n   1 copy COPY a.txt /a.txt\n")
    (ctx / "dir/b.txt").write_text("changed")
    out = build(ctx, root, capsys)
    assert "(dir/b.txt changed)" in out


def test_ignored_files_do_not_defeat_it(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(ctx)
    build(ctx, root, capsys)
    fp1 = fastpath.fingerprint(ctx, ctx / "Dockerfile", {}, "v")
    (ctx / "dir/skip/x").write_text("still ignored")
    assert fastpath.fingerprint(ctx, ctx / "Dockerfile", {}, "v") == fp1
    (ctx / "dir/new").write_text("not ignored")
    assert fastpath.fingerprint(ctx, ctx / "Dockerfile", {}, "v") != fp1


def test_a_pruned_blob_or_moved_tag_takes_the_full_path(ctx: Path, root: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    setup(ctx)
    build(ctx, root, capsys)
    with Store.open(root) as store:
        tag = store.index.get_tag("fp:1")
        assert tag is not None
        store.index.delete_tag("fp:1")
    assert fastpath.lookup(root, ctx / "Dockerfile", None, "x", ("fp:1",)) is None
    out = build(ctx, root, capsys)  # the full path puts the tag back
    assert "hit rate 100%" in out
    with Store.open(root) as store:
        assert store.index.get_tag("fp:1") is not None


def test_build_args_and_no_cache_bypass_it(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(ctx)
    build(ctx, root, capsys)
    out = build(ctx, root, capsys, "--no-cache")
    assert "--no-cache" in out and "hit rate 0%" in out
    out = build(ctx, root, capsys, "--build-arg", "X=1")
    assert "hit rate 100%" in out


def test_remote_sources_never_take_the_fast_path(ctx: Path) -> None:
    write(ctx, {"Dockerfile": "FROM scratch\nADD https://example.invalid/x /x\n"})
    assert fastpath.fingerprint(ctx, ctx / "Dockerfile", {}, "v") is None
    write(ctx, {"Dockerfile": "FROM scratch\nCOPY a /a\n", "a": "a"})
    assert fastpath.fingerprint(ctx, ctx / "Dockerfile", {}, "v") is not None
