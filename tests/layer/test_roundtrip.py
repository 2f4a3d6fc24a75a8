"""Property tests: a tree written as a layer and extracted again is the same tree, byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.layer import Compression
from layerbuild.layer import sources as sources_module

from .trees import Spec, build, fresh, trees
from .treeutil import apply_bytes, layer_bytes, sha256, snapshot, tar_members

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="trees carry owners and device nodes: needs root")
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(specs=trees(), compression=st.sampled_from(list(Compression)))
def test_write_then_extract_gives_the_same_tree(
    tmp_path: Path, specs: list[Spec], compression: Compression
) -> None:
    src, dest = fresh(tmp_path / "src"), fresh(tmp_path / "dest")
    build(src, specs)
    data, info = layer_bytes(src, compression)
    result = apply_bytes(data, dest)
    assert snapshot(dest) == snapshot(src)
    assert result.diff_id == info.diff_id
    assert info.digest == sha256(data) and info.size == len(data)
    assert result.uncompressed_size == info.uncompressed_size


@SETTINGS
@given(specs=trees(sparse=False), seed=st.randoms())
def test_same_tree_gives_identical_bytes(tmp_path: Path, specs: list[Spec], seed, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    src = fresh(tmp_path / "src")
    build(src, specs)
    first, info1 = layer_bytes(src)
    # A copy made by cp -a: other inodes, ctimes and directory order; then fresh atimes everywhere.
    copy = tmp_path / "copy"
    if copy.exists():
        shutil.rmtree(copy)
    subprocess.run(["cp", "-a", str(src), str(copy)], check=True)
    for dirpath, _, filenames in os.walk(copy):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            os.utime(p, ns=(st_.st_atime_ns + 12345, st_.st_mtime_ns), follow_symlinks=False)
    real_scandir = os.scandir

    class Shuffled:
        def __init__(self, path):  # type: ignore[no-untyped-def]
            with real_scandir(path) as it:
                self.entries = list(it)
            seed.shuffle(self.entries)

        def __enter__(self):  # type: ignore[no-untyped-def]
            return iter(self.entries)

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            return False

    monkeypatch.setattr(sources_module.os, "scandir", Shuffled)
    try:
        second, info2 = layer_bytes(copy)
    finally:
        monkeypatch.undo()
    assert second == first
    assert info2 == info1


def test_source_date_epoch_clamps_mtimes(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("a")
    (tmp_path / "new").write_text("b")
    os.utime(tmp_path / "old", (100, 100))
    os.utime(tmp_path / "new", (2_000_000_000, 2_000_000_000))
    data, _ = layer_bytes(tmp_path, Compression.NONE, source_date_epoch=1000)
    members = {m.name: m.mtime for m in tar_members(data)}
    assert members == {"old": 100, "new": 1000}


def test_output_reads_back_with_other_tools(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build(
        src,
        [
            Spec("dir ü", "dir", 0o755),
            Spec("dir ü/" + "x" * 150, "file", 0o4755, b"long name"),
            Spec("link", "symlink", target="y" * 120),
            Spec("hl", "hardlink", target="dir ü/" + "x" * 150),
            Spec("big-uid", "file", 0o600, b"u", owner=(3_000_000, 5)),
        ],
    )
    data, _ = layer_bytes(src, Compression.NONE)
    members = {m.name: m for m in tar_members(data)}
    assert set(members) == {"dir ü", "dir ü/" + "x" * 150, "link", "hl", "big-uid"}
    assert members["link"].linkname == "y" * 120
    assert members["hl"].islnk() and members["hl"].linkname == "dir ü/" + "x" * 150
    assert members["big-uid"].uid == 3_000_000
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    (tmp_path / "l.tar").write_bytes(data)
    listing = subprocess.run(
        ["tar", "-tf", str(tmp_path / "l.tar")], capture_output=True, text=True, check=True
    )
    assert listing.stdout.splitlines() == ["big-uid", "dir ü/", "dir ü/" + "x" * 150, "hl", "link"]


def test_extracts_gnu_tar_and_gzip_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build(
        src,
        [
            Spec("a", "dir", 0o750),
            Spec("a/" + "n" * 120, "file", 0o644, b"x" * 5000),
            Spec("a/s", "symlink", target="../b"),
        ],
    )
    for fmt in ("gnu", "posix"):
        archive = tmp_path / f"{fmt}.tar.gz"
        subprocess.run(["tar", f"--format={fmt}", "-czf", str(archive), "-C", str(src), "."], check=True)
        dest = fresh(tmp_path / f"dest-{fmt}")
        result = apply_bytes(archive.read_bytes(), dest)
        assert result.format == "gzip"
        assert snapshot(dest) == snapshot(src)


def test_sockets_are_skipped(tmp_path: Path) -> None:
    import socket

    (tmp_path / "f").write_text("x")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        data, _ = layer_bytes(tmp_path, Compression.NONE)
    assert [m.name for m in tar_members(data)] == ["f"]
