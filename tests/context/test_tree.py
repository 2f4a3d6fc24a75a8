"""The build context: ignore rules while walking, symlinks kept inside, and the persistent stat cache."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.context import contenthash
from layerbuild.context import tree as ctxmod
from layerbuild.context.contenthash import changed_paths, describe_changes
from layerbuild.context.tree import BuildContext, StageTree
from layerbuild.errors import BuildError
from layerbuild.store import Store
from layerbuild.worker.copy import select_copy
from tests.worker.helpers import write


@pytest.fixture(autouse=True)
def _no_racy_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    # Files made by a test are seconds old at most; the racy-stat guard would (rightly) refuse to
    # remember them. The guard has its own test below.
    monkeypatch.setattr(ctxmod, "RACY_MARGIN_NS", -(10**18))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as s:
        yield s


@pytest.fixture
def ctxdir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    write(root, {f"src/m{i}.py": f"print({i})\n" for i in range(20)} | {"deps.txt": "x==1\n"})
    return root


def key(root: Path, store: Store, src: str = "src/") -> tuple[str, dict[str, str], BuildContext]:
    ctx = BuildContext.open(root, store=store)
    sel = select_copy(ctx, [src], "/app/")
    ctx.save()
    return sel.content_key, dict(sel.fingerprints), ctx


def test_warm_cache_reads_nothing(ctxdir: Path, store: Store) -> None:
    k1, _, c1 = key(ctxdir, store)
    assert c1.stats.hashed_files == 20
    k2, _, c2 = key(ctxdir, store)
    assert k2 == k1
    assert c2.stats.hashed_files == 0 and c2.stats.cache_hits == 20


def test_touch_rereads_but_keeps_the_key(ctxdir: Path, store: Store) -> None:
    k1, _, _ = key(ctxdir, store)
    later = time.time() + 100
    os.utime(ctxdir / "src/m3.py", (later, later))
    k2, _, c2 = key(ctxdir, store)
    assert k2 == k1
    assert c2.stats.hashed_files == 1  # stat changed: re-hashed once, same content
    _, _, c3 = key(ctxdir, store)
    assert c3.stats.hashed_files == 0


def test_edit_changes_key_and_names_the_file(ctxdir: Path, store: Store) -> None:
    k1, f1, _ = key(ctxdir, store)
    (ctxdir / "src/m7.py").write_text("print('changed')\n")
    k2, f2, _ = key(ctxdir, store)
    assert k2 != k1
    assert changed_paths(f1, f2) == ["src/m7.py"]
    assert describe_changes(f1, f2) == "src/m7.py changed"


def test_chmod_changes_key(ctxdir: Path, store: Store) -> None:
    k1, f1, _ = key(ctxdir, store)
    os.chmod(ctxdir / "src/m1.py", 0o755)
    k2, f2, _ = key(ctxdir, store)
    assert k2 != k1 and changed_paths(f1, f2) == ["src/m1.py"]


def test_owner_is_not_part_of_the_context_key(ctxdir: Path, store: Store) -> None:
    k1, _, _ = key(ctxdir, store)
    os.chown(ctxdir / "src/m1.py", 1234, 1234)
    assert key(ctxdir, store)[0] == k1


def test_same_size_and_mtime_but_new_inode_is_rehashed(ctxdir: Path, store: Store) -> None:
    k1, _, _ = key(ctxdir, store)
    target = ctxdir / "src/m2.py"
    st = target.stat()
    replacement = ctxdir / "tmp"
    replacement.write_text("print(9)\n")  # same size as "print(2)\n", different bytes
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, target)
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    k2, _, c2 = key(ctxdir, store)
    assert k2 != k1 and c2.stats.hashed_files == 1


def test_deleted_file_changes_key_and_leaves_the_cache(ctxdir: Path, store: Store) -> None:
    k1, f1, _ = key(ctxdir, store)
    (ctxdir / "src/m0.py").unlink()
    k2, f2, ctx = key(ctxdir, store)
    assert k2 != k1 and changed_paths(f1, f2) == ["src/m0.py"]
    from layerbuild.store.statcache import load_stat_cache

    assert b"src/m0.py" not in load_stat_cache(store.db, ctx.cache_id)


def test_racy_files_are_not_remembered(ctxdir: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctxmod, "RACY_MARGIN_NS", 3600 * 10**9)
    key(ctxdir, store)
    _, _, c2 = key(ctxdir, store)
    assert c2.stats.hashed_files == 20  # all changed "just now": hashed again, never trusted


def test_dockerignore_hides_files_from_copy(ctxdir: Path, store: Store) -> None:
    write(ctxdir, {".dockerignore": "src/m1*\n!src/m11.py\n", "src/keep/x": "x"})
    ctx = BuildContext.open(ctxdir)
    sel = select_copy(ctx, ["src/"], "/app/")
    names = {rel for rel in sel.fingerprints}
    assert "src/m1.py" not in names and "src/m10.py" not in names
    assert "src/m11.py" in names and "src/m2.py" in names
    k1 = sel.content_key
    (ctxdir / "src/m12.py").write_text("ignored edit")
    assert select_copy(BuildContext.open(ctxdir), ["src/"], "/app/").content_key == k1
    with pytest.raises(BuildError, match="not found") as info:
        select_copy(BuildContext.open(ctxdir), ["src/m1.py"], "/app/")
    assert "excluded by .dockerignore" in (info.value.hint or "")


def test_excluded_directory_with_exception_keeps_only_the_exception(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            ".dockerignore": "docs\n!docs/README.md\n",
            "docs/README.md": "r",
            "docs/other.md": "o",
            "docs/deep/x.md": "x",
        },
    )
    ctx = BuildContext.open(tmp_path)
    assert sorted(e.rel for e in ctx.walk("")) == [".dockerignore", "docs", "docs/README.md"]


def test_excluded_directory_is_skipped_wholesale(tmp_path: Path) -> None:
    write(tmp_path, {".dockerignore": "node_modules\n", "node_modules/a/b": "x", "app.js": "y"})
    os.chmod(tmp_path / "node_modules", 0o000)  # unreadable: would fail if it were walked
    try:
        ctx = BuildContext.open(tmp_path)
        assert sorted(e.rel for e in ctx.walk("")) == [".dockerignore", "app.js"]
    finally:
        os.chmod(tmp_path / "node_modules", 0o755)


def test_dockerfile_and_dockerignore_are_in_the_context_unless_excluded(tmp_path: Path) -> None:
    write(tmp_path, {"Dockerfile": "FROM scratch\n", ".dockerignore": "*.log\n", "a.log": "l"})
    ctx = BuildContext.open(tmp_path, dockerfile=tmp_path / "Dockerfile")
    assert sorted(ctx.children("")) == [".dockerignore", "Dockerfile"]
    (tmp_path / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    ctx = BuildContext.open(tmp_path, dockerfile=tmp_path / "Dockerfile")
    assert sorted(ctx.children("")) == ["a.log"]


def test_symlinks_resolve_inside_the_context(tmp_path: Path) -> None:
    write(tmp_path, {"real/file": "in", "other/x": "x"})
    os.symlink("/real", tmp_path / "abs")  # absolute: means <context>/real
    os.symlink("../../etc", tmp_path / "out")  # climbs above the root
    os.symlink("real", tmp_path / "rel")
    ctx = BuildContext.open(tmp_path)
    assert ctx.resolve("abs/file").rel == "real/file"  # type: ignore[union-attr]
    assert ctx.resolve("rel/file").rel == "real/file"  # type: ignore[union-attr]
    with pytest.raises(BuildError, match="outside"):
        ctx.resolve("out/passwd")
    assert ctx.resolve("abs", follow=False).is_link  # type: ignore[union-attr]


def test_stage_tree_keeps_owners_in_fingerprints(tmp_path: Path) -> None:
    write(tmp_path, {"bin/tool": "t"})
    k1 = select_copy(StageTree(tmp_path), ["/bin/tool"], "/x").content_key
    os.chown(tmp_path / "bin/tool", 1000, 1000)
    assert select_copy(StageTree(tmp_path), ["/bin/tool"], "/x").content_key != k1


def test_big_files_are_hashed_ahead_in_parallel_with_the_same_fingerprints(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "big"
    root.mkdir()
    for i in range(4):
        (root / f"b{i}.bin").write_bytes(os.urandom(ctxmod.PREFETCH_MIN_BYTES + i))
    (root / "small.txt").write_text("small\n")
    plain = BuildContext(root)
    expected = {e.rel: plain.fingerprint(e) for e in plain.walk("")}
    calls: list[str] = []
    real = contenthash.hash_file

    def counting(path: str) -> tuple[str, os.stat_result]:
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(ctxmod, "hash_file", counting)
    tree = BuildContext(root, store=store)
    entries = list(tree.walk(""))
    tree.prefetch(entries)
    assert sorted(calls) == [f"b{i}.bin" for i in range(4)]  # the small one is left to the loop
    assert {e.rel: tree.fingerprint(e) for e in entries} == expected
    assert sorted(calls) == [*(f"b{i}.bin" for i in range(4)), "small.txt"]  # nothing hashed twice
    tree.save()
    calls.clear()
    again = BuildContext(root, store=store)
    again.prefetch(list(again.walk("")))  # the stat cache vouches for all of them: nothing read
    assert calls == []


def _capability(bit: int) -> bytes:
    """A vfs_cap_data (revision 2) with one permitted capability, as `setcap cap_x+p` writes it."""
    import struct

    return struct.pack("<5I", 0x02000000, 1 << bit, 0, 0, 0)


def _layer_capabilities(ctx: BuildContext) -> dict[str, str | None]:
    import io
    import tarfile

    from layerbuild.layer import Compression
    from layerbuild.worker.copy import write_copy_layer

    buf = io.BytesIO()
    write_copy_layer(select_copy(ctx, ["src/"], "/app/"), buf, compression=Compression.NONE)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        return {m.name: m.pax_headers.get("SCHILY.xattr.security.capability") for m in tar if m.isfile()}


@pytest.mark.skipif(os.geteuid() != 0, reason="setting security.capability needs root")
def test_a_copy_carries_file_capabilities_as_its_fingerprints_took_them(
    ctxdir: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's capability goes into the layer (as a pax xattr), read once when the file is hashed,
    again where the stat cache vouches for the file; setting or dropping one is seen (it changes the
    ctime, which the stat key holds)."""
    os.setxattr(ctxdir / "src/m1.py", "security.capability", _capability(10))
    read: list[str] = []
    real = ctxmod.read_capability
    monkeypatch.setattr(ctxmod, "read_capability", lambda path: read.append(os.path.basename(path)) or real(path))
    first = BuildContext.open(ctxdir, store=store)
    caps = _layer_capabilities(first)
    assert sorted(read) == sorted(f"m{i}.py" for i in range(20))  # once each, for the fingerprint
    assert caps["app/m1.py"] is not None and caps["app/m1.py"].encode("latin-1") == _capability(10)
    assert [n for n, c in caps.items() if c is not None] == ["app/m1.py"]
    first.save()
    again = BuildContext.open(ctxdir, store=store)
    assert _layer_capabilities(again) == caps
    assert again.stats.cache_hits == 20 and again.stats.hashed_files == 0  # every file vouched for
    again.save()
    os.removexattr(ctxdir / "src/m1.py", "security.capability")
    os.setxattr(ctxdir / "src/m2.py", "security.capability", _capability(12))
    third = BuildContext.open(ctxdir, store=store)
    got = _layer_capabilities(third)
    assert got["app/m1.py"] is None and got["app/m2.py"] is not None
    assert third.stats.hashed_files == 2
