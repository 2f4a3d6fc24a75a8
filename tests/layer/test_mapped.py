"""The mapped-entry writer: canonical order whatever the input order, inline and file content, refusals."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from layerbuild.errors import LayerbuildError, UsageError
from layerbuild.layer import Kind, MappedEntry, apply_layer, write_mapped
from tests.layer.treeutil import snapshot


def _entries(src: Path) -> list[MappedEntry]:
    st = os.stat(src)
    return [
        MappedEntry("a", Kind.DIR, mode=0o750, uid=1, gid=2, mtime=100),
        MappedEntry(
            "a/file",
            Kind.FILE,
            mode=0o644,
            mtime=200,
            size=st.st_size,
            source=str(src),
            identity=(st.st_dev, st.st_ino),
        ),
        MappedEntry("a/inline", Kind.FILE, mode=0o600, mtime=300, data=b"inline"),
        MappedEntry("a-b", Kind.SYMLINK, linkname="a/file", mtime=400),
    ]


def test_order_does_not_matter_and_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"content" * 1000)
    one, two = io.BytesIO(), io.BytesIO()
    info = write_mapped(_entries(src), one)
    write_mapped(list(reversed(_entries(src))), two)
    assert one.getvalue() == two.getvalue()
    out = tmp_path / "out"
    out.mkdir()
    assert apply_layer(io.BytesIO(one.getvalue()), out).diff_id == info.diff_id
    snap = snapshot(out)
    assert snap["a"]["mode"] == 0o750 and snap["a/inline"]["mode"] == 0o600
    assert (out / "a/file").read_bytes() == b"content" * 1000
    assert snap["a-b"]["target"] == b"a/file"


def test_source_date_epoch_clamps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    buf = io.BytesIO()
    write_mapped([MappedEntry("f", Kind.FILE, mtime=10**9, data=b"x")], buf, source_date_epoch=5)
    apply_layer(io.BytesIO(buf.getvalue()), out)
    assert os.stat(out / "f").st_mtime == 5


@pytest.mark.parametrize("path", ["../x", "/", "a/../../b", "dir/.wh.x"])
def test_bad_paths_refused(path: str) -> None:
    with pytest.raises(LayerbuildError):
        write_mapped([MappedEntry(path, Kind.FILE, data=b"")], io.BytesIO())


def test_duplicates_refused() -> None:
    with pytest.raises(UsageError, match="twice"):
        write_mapped([MappedEntry("x", Kind.DIR), MappedEntry("./x", Kind.DIR)], io.BytesIO())


def test_replaced_source_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"abc")
    st = os.stat(src)
    entry = MappedEntry("f", Kind.FILE, size=3, source=str(src), identity=(st.st_dev, st.st_ino))
    other = tmp_path / "other"
    other.write_bytes(b"xyz")  # made while src still exists, so it cannot reuse src's inode
    os.replace(other, src)
    with pytest.raises(LayerbuildError, match="replaced"):
        write_mapped([entry], io.BytesIO())


def test_hard_links_round_trip_and_must_follow_their_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"shared")
    st = os.stat(src)
    file = MappedEntry("d/a", Kind.FILE, size=6, source=str(src), identity=(st.st_dev, st.st_ino))
    link = MappedEntry("d/z", Kind.HARDLINK, linkname="d/a")
    buf = io.BytesIO()
    write_mapped([link, MappedEntry("d", Kind.DIR, mode=0o755), file], buf)
    out = tmp_path / "out"
    out.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), out)
    a, z = os.stat(out / "d/a"), os.stat(out / "d/z")
    assert a.st_ino == z.st_ino and a.st_nlink == 2 and z.st_size == 6
    # A link before its file, to a missing path or to a directory could not be unpacked.
    for bad in (MappedEntry("c", Kind.HARDLINK, linkname="d/a"), MappedEntry("d/b", Kind.HARDLINK, linkname="x"),
                MappedEntry("d/b", Kind.HARDLINK, linkname="d")):
        with pytest.raises(UsageError, match="hard link"):
            write_mapped([MappedEntry("d", Kind.DIR), file, bad], io.BytesIO())
