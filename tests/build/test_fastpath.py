"""The no-op fast path answers only when nothing the build reads has changed."""

from __future__ import annotations

import os
import stat
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


def build_stdin(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str], stdin: bytes, *argv: str) -> str:
    """`build ARGV...` with `stdin` as standard input (a file, as `< file`)."""
    import sys

    feed = root.parent / "stdin"
    feed.write_bytes(stdin)
    saved = sys.stdin
    with open(feed, encoding="utf-8") as sys.stdin:
        try:
            assert main(["--root", str(root), "build", "--progress", "plain", "-t", "fp:1", *argv]) == 0
        finally:
            sys.stdin = saved
    return capsys.readouterr().err


def test_dockerfile_on_stdin_with_a_directory_may_be_answered(ctx: Path, root: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    setup(ctx)
    (ctx / "Dockerfile").write_text("FROM scratch\nnot this one\n")
    build_stdin(ctx, root, capsys, DOCKERFILE.encode(), "-f", "-", str(ctx))
    import layerbuild.worker.build as full

    real = full.run_build
    calls: list[object] = []

    def counted(*a: object, **k: object) -> object:
        calls.append(a)
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(full, "run_build", counted)
    out = build_stdin(ctx, root, capsys, DOCKERFILE.encode(), "-f", "-", str(ctx))
    assert calls == [] and "hit rate 100%" in out  # the same Dockerfile and files: the last build answers
    build_stdin(ctx, root, capsys, (DOCKERFILE + "LABEL x=1\n").encode(), "-f", "-", str(ctx))
    assert len(calls) == 1  # another Dockerfile on stdin: the full path
    for flags in (("--label", "v=1"), ("--label", "v=2"), ("--add-host", "h:10.0.0.1")):
        build_stdin(ctx, root, capsys, DOCKERFILE.encode(), *flags, "-f", "-", str(ctx))
    assert len(calls) == 4  # another --label or --add-host is never answered by the last build
    with Store.open(root) as store:
        from layerbuild.image.store_io import resolve_image

        assert resolve_image(store, "fp:1").config.config.labels_dict() == {}


def test_an_archive_on_stdin_always_takes_the_full_path(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", DOCKERFILE.encode()), ("a.txt", b"a"), ("dir/b.txt", b"b")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    build_stdin(ctx, root, capsys, buf.getvalue(), "-")
    import layerbuild.worker.build as full

    real = full.run_build
    calls: list[object] = []
    monkeypatch.setattr(full, "run_build", lambda *a, **k: calls.append(a) or real(*a, **k))
    out = build_stdin(ctx, root, capsys, buf.getvalue(), "-")
    assert len(calls) == 1 and "hit rate 100%" in out
    assert not any(root.joinpath("fastpath").glob("*.json"))  # nothing recorded for a scratch context


def test_a_no_op_after_an_edit_kept_as_a_recipe_is_answered(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited COPY layer is kept as a recipe of frames (store/chunks.py), not a blob file: the
    fast path counts it as present, so the no-op after the edit is answered like any other."""
    write(ctx, {"Dockerfile": "FROM scratch\nCOPY src/ /src/\n"})
    for i in range(600):
        path = ctx / "src" / f"d{i % 5}" / f"f{i:04}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(3000).hex().encode())  # poorly compressible: many frames
    build(ctx, root, capsys)
    with open(ctx / "src" / "d2" / "f0152.txt", "ab") as f:
        f.write(b"edited\n")
    build(ctx, root, capsys)
    assert any((root / "recipes").iterdir()), "the edit was not kept as a recipe: the test needs one"
    calls: list[object] = []
    import layerbuild.worker.build as full

    monkeypatch.setattr(full, "run_build", lambda *a, **k: calls.append(a))  # must not be reached
    out = build(ctx, root, capsys)
    assert calls == [] and "hit rate 100%" in out


def _expected_rows(taken: fastpath.Scan) -> dict[str, str]:
    """The side file's rows, spelled out: every regular file whose ctime is past the racy margin of
    the scan, by its row name (tree label and stat line), with its key."""
    trusted = taken.started_ns - fastpath.RACY_MARGIN_NS
    return {fastpath._row(label, line): taken.keys[(label, rel)] for label, rel, st, _link, line in taken.entries
            if stat.S_ISREG(st.st_mode) and st.st_ctime_ns < trusted}


def _expected_content(taken: fastpath.Scan) -> str:
    """The content fingerprint, spelled out: the scan's header, then per entry its tree label, path,
    mode, owner and key (a regular file's content key, a link's target, a device's numbers, nothing
    for a directory), with xxh3-128."""
    import xxhash

    lines = ["content\0"]
    for label, rel, st, link, _line in taken.entries:
        if stat.S_ISREG(st.st_mode):
            key = taken.keys[(label, rel)]
        elif stat.S_ISLNK(st.st_mode):
            key = link
        else:
            key = "" if stat.S_ISDIR(st.st_mode) else f"{st.st_rdev}"
        lines.append(f"{label}\0{rel}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{key}\n")
    h = xxhash.xxh3_128(taken.header)
    h.update("".join(lines).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def test_the_content_pass_gives_the_content_fingerprint_and_the_side_file_rows(ctx: Path, tmp_path: Path) -> None:
    """fastpath._content_pass (one pass: keys, content fingerprint, side-file rows) agrees with the
    content fingerprint and the rows spelled out, with some keys from the side file, one read again,
    a symlink and a directory among the entries."""
    setup(ctx)
    os.symlink("a.txt", ctx / "link")
    (ctx / "dir" / "c.txt").write_text("c")
    old = time.time() - 100
    for p in (ctx / "a.txt", ctx / "dir" / "b.txt", ctx / "dir" / "c.txt"):
        os.utime(p, (old, old))
    time.sleep(0.06)  # past the racy margin: the stats vouch for these files
    taken = fastpath.scan(ctx, ctx / "Dockerfile", {}, "v")
    assert taken is not None
    rows = {fastpath._row(label, line): f"key-of-{rel}" for label, rel, _st, _link, line in taken.entries
            if rel != "dir/c.txt"}  # c.txt's row is missing: read again
    got = fastpath._content_pass(taken, rows, {"": ctx})
    assert got is not None
    content, stats, values, reread, reread_bytes = got
    assert (reread, reread_bytes) == (1, 1)  # c.txt
    assert taken.keys[("", "a.txt")] == "key-of-a.txt"
    assert taken.keys[("", "dir/c.txt")] == fastpath.file_key("dir/c.txt", str(ctx / "dir/c.txt"),
                                                             (ctx / "dir/c.txt").stat())
    assert content == _expected_content(taken)
    side = tmp_path / "side.json"
    fastpath._write_stats(side, stats, values, content)
    assert fastpath._load_stats(side, content) == _expected_rows(taken)
    assert len(values) == 5  # the regular files: Dockerfile, .dockerignore, a.txt, dir/b.txt, dir/c.txt


def test_an_edit_build_records_the_side_file_rows_the_touch_check_made(
    ctx: Path, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a build whose touch check found the content changed (an edit), the record's side file
    is the rows that check made over the same keys, without a second pass; and the next touch is
    answered from it."""
    setup(ctx)
    old = time.time() - 100
    for p in ctx.rglob("*"):
        os.utime(p, (old, old))
    time.sleep(0.06)
    build(ctx, root, capsys)
    (ctx / "a.txt").write_text("edited")
    os.utime(ctx / "a.txt", (old + 1, old + 1))
    time.sleep(0.06)
    calls: list[object] = []
    real = fastpath._content_pass
    monkeypatch.setattr(fastpath, "_content_pass", lambda *a, **k: calls.append(a) or real(*a, **k))
    build(ctx, root, capsys)
    assert len(calls) == 1  # the check's pass; the record wrote its rows as they were
    side = fastpath._stats_path(fastpath._record_path(root, ctx / "Dockerfile", None))
    import json

    content = json.loads(side.read_text())["content"]
    taken = fastpath.scan(ctx, ctx / "Dockerfile", {}, "v")
    assert taken is not None
    rows = fastpath._load_stats(side, content)
    got = real(taken, rows, {"": ctx})
    assert got is not None and got[3:] == (0, 0)  # every key from the side file
    assert rows == _expected_rows(taken) and len(rows) == 4  # every regular file but the ignored one
    os.utime(ctx / "dir" / "b.txt", (old + 5, old + 5))
    import layerbuild.worker.build as full

    monkeypatch.setattr(full, "run_build", lambda *a, **k: pytest.fail("the touch is answered by the record"))
    assert "hit rate 100%" in build(ctx, root, capsys)


def test_a_cold_build_records_every_key_from_what_it_read(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The record of a full build takes the keys of the files it read from its context tree (no file
    read again for it), and the rest (a file no step copies) read now; its side file is the rows of
    every regular file, and a later touch is answered from them."""
    setup(ctx)
    (ctx / "unused.txt").write_text("no step copies me")
    old = time.time() - 100
    for p in ctx.rglob("*"):
        os.utime(p, (old, old))
    time.sleep(0.06)
    read: list[str] = []
    real = fastpath.file_key
    monkeypatch.setattr(fastpath, "file_key", lambda rel, *a: read.append(rel) or real(rel, *a))
    build(ctx, root, capsys)
    assert sorted(read) == [".dockerignore", "Dockerfile", "unused.txt"]  # a.txt, dir/b.txt: the build's own
    side = fastpath._stats_path(fastpath._record_path(root, ctx / "Dockerfile", None))
    import json

    content = json.loads(side.read_text())["content"]
    taken = fastpath.scan(ctx, ctx / "Dockerfile", {}, "v")
    assert taken is not None
    rows = fastpath._load_stats(side, content)
    got = fastpath._content_pass(taken, rows, {"": ctx})
    assert got is not None and rows == _expected_rows(taken) and len(rows) == 5  # (the touch below checks content)
    os.utime(ctx / "unused.txt", (old + 5, old + 5))
    import layerbuild.worker.build as full

    monkeypatch.setattr(full, "run_build", lambda *a, **k: pytest.fail("the touch is answered by the record"))
    assert "hit rate 100%" in build(ctx, root, capsys)


def test_a_touch_leaves_the_side_file_until_its_stale_rows_weigh_something(
    ctx: Path, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A touch answered by the record rewrites the record (its stat fingerprint) but not the side
    file while the files it sends to be read again are few and small; each later touch reads them
    again (same keys) and is still answered; past the bound the side file is rewritten; an edit is
    always seen."""
    write(ctx, {"Dockerfile": "FROM scratch\nCOPY src/ /src/\n",
                **{f"src/f{i:02}.txt": f"file {i}\n" for i in range(40)}})
    old = time.time() - 100
    for p in ctx.rglob("*"):
        os.utime(p, (old, old))
    time.sleep(0.06)
    build(ctx, root, capsys)
    side = fastpath._stats_path(fastpath._record_path(root, ctx / "Dockerfile", None))
    first = side.read_text()
    import layerbuild.worker.build as full

    real = full.run_build
    monkeypatch.setattr(full, "run_build", lambda *a, **k: pytest.fail("answered by the record"))
    for i in range(fastpath._STALE_ROWS):
        os.utime(ctx / f"src/f{i:02}.txt", (old + 10 + i, old + 10 + i))
        time.sleep(0.06)  # the touched file's stat vouches for it by the next build
        assert "hit rate 100%" in build(ctx, root, capsys)
        assert side.read_text() == first  # up to the bound, the rows stay as they were
        assert "hit rate 100%" in build(ctx, root, capsys)  # a no-op: answered by stats alone
    os.utime(ctx / "src/f39.txt", (old + 99, old + 99))
    time.sleep(0.06)
    assert "hit rate 100%" in build(ctx, root, capsys)
    assert side.read_text() != first  # 33 files to read again: the side file is rewritten
    (ctx / "src/f05.txt").write_text("edited\n")
    os.utime(ctx / "src/f05.txt", (old + 200, old + 200))
    monkeypatch.setattr(full, "run_build", real)
    out = build(ctx, root, capsys)
    assert "hit rate 100%" not in out and "COPY src/ /src/" in out
