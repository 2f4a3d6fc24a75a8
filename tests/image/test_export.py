"""The local and tar exporters on a two-layer image with whiteouts, an opaque dir, symlinks and hardlinks."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.errors import UsageError
from layerbuild.image import HistoryEntry, ImageConfig, StoredImage, export_local, export_tar, write_image
from layerbuild.store import MEDIA_LAYER_TAR, Store
from tests.image.conftest import MakeLayer

EXPECTED = {
    "etc": "dir",
    "etc/b": b"b",
    "etc/c": b"c2",
    "dir": "dir",
    "dir/new": b"n",
    "link": "->etc/b",
}


def two_layer_image(store: Store, make_layer: MakeLayer) -> StoredImage:
    base = make_layer({"etc/a": b"a", "etc/b": b"b", "etc/c": b"c1", "dir/old": b"o", "dir/sub/deep": b"d",
                       "link": "->etc/a", "gone/x": b"x"})
    top = make_layer({"etc/c": b"c2", "dir": None, "dir/new": b"n", "link": "->etc/b"},
                     deleted=("etc/a", "gone"), opaque=("dir",))
    config = ImageConfig("amd64", "linux")
    for layer in (base, top):
        config = config.with_layer(layer.diff_id, HistoryEntry(created_by="COPY"))
    return write_image(store, config, ["two"])


def read_dir(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = "->" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def read_tar(data: bytes) -> dict[str, object]:
    out: dict[str, object] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.issym():
                out[m.name] = "->" + m.linkname
            elif m.isdir():
                out[m.name] = "dir"
            else:
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def test_export_local(store: Store, make_layer: MakeLayer, tmp_path: Path) -> None:
    image = two_layer_image(store, make_layer)
    dest = tmp_path / "out" / "rootfs"
    result = export_local(store, image, dest)
    assert result.dest == dest
    assert read_dir(dest) == EXPECTED
    assert not [p for p in dest.parent.iterdir() if p.name != "rootfs"]  # no staging left behind
    assert (dest / "etc" / "b").stat().st_mtime == 1_700_000_000


def test_export_local_into_an_existing_dir_adds_and_replaces(
    store: Store, make_layer: MakeLayer, tmp_path: Path
) -> None:
    image = two_layer_image(store, make_layer)
    dest = tmp_path / "dest"
    (dest / "dir").mkdir(parents=True)
    (dest / "dir" / "mine").write_bytes(b"kept")  # the image's opaque dir does not touch it
    (dest / "etc").write_bytes(b"a file where the image has a directory")
    (dest / "link").mkdir()  # a directory where the image has a symlink
    export_local(store, image, dest)
    assert read_dir(dest) == {**EXPECTED, "dir/mine": b"kept"}


def test_export_local_refuses_a_file_destination(store: Store, make_layer: MakeLayer, tmp_path: Path) -> None:
    image = two_layer_image(store, make_layer)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(UsageError, match="not a directory"):
        export_local(store, image, tmp_path / "f")


def test_export_tar_is_the_same_filesystem_and_deterministic(
    store: Store, make_layer: MakeLayer, tmp_path: Path
) -> None:
    image = two_layer_image(store, make_layer)
    out = io.BytesIO()
    result = export_tar(store, image, out)
    data = out.getvalue()
    assert read_tar(data) == EXPECTED
    assert result.size == len(data) and result.entries == len(EXPECTED)
    # Canonical order: parents before children, names sorted.
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["dir", "dir/new", "etc", "etc/b", "etc/c", "link"]
    # To a file: the same bytes, written atomically.
    again = export_tar(store, image, tmp_path / "rootfs.tar")
    assert again.digest == result.digest
    assert (tmp_path / "rootfs.tar").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_export_tar_keeps_owners_and_hardlinks(store: Store, make_layer: MakeLayer, tmp_path: Path) -> None:
    # A layer written by hand: owners that the caller could not create, and a hardlink pair.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, uid in (("srv", 1234),):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o750, uid, uid
            tar.addfile(info)
        info = tarfile.TarInfo("srv/data")
        info.size, info.uid, info.gid, info.mode = 4, 1234, 99, 0o600
        tar.addfile(info, io.BytesIO(b"data"))
        link = tarfile.TarInfo("srv/alias")
        link.type, link.linkname = tarfile.LNKTYPE, "srv/data"
        tar.addfile(link)
    buf.seek(0)
    from layerbuild.layer.ingest import ingest_layer

    first = ingest_layer(store, buf)
    # The next layer replaces srv/data: the old hardlink keeps the old content.
    second = make_layer({"srv": None, "srv/data": b"new!"})
    config = ImageConfig("amd64", "linux", diff_ids=(first.diff_id, second.diff_id))
    image = write_image(store, config)
    out = io.BytesIO()
    export_tar(store, image, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["srv/alias"].isfile()  # its link partner was replaced, so it carries content now
        alias = tar.extractfile(members["srv/alias"])
        assert alias is not None and alias.read() == b"data"
        assert (members["srv/alias"].uid, members["srv/alias"].gid, members["srv/alias"].mode) == (1234, 99, 0o600)
        data = tar.extractfile(members["srv/data"])
        assert data is not None and data.read() == b"new!"

    # Without the replacement, the pair stays a hardlink pair (first path in order carries the content).
    image = write_image(store, ImageConfig("amd64", "linux", diff_ids=(first.diff_id,)))
    out = io.BytesIO()
    export_tar(store, image, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["srv/alias"].isfile() and members["srv/data"].islnk()
        assert members["srv/data"].linkname == "srv/alias"
        assert members["srv"].uid == 1234 and members["srv"].mode == 0o750


def test_unsafe_layers_are_refused_by_both_exporters(store: Store, tmp_path: Path) -> None:
    from layerbuild.errors import UnsafeArchiveError
    from layerbuild.layer.ingest import ingest_layer

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    # `ingest_layer` refuses such a tar at the door; one that got into the store some other way
    # (an older layerbuild, a hand-made blob) is still refused by the exporters.
    with pytest.raises(UnsafeArchiveError, match="escape"):
        ingest_layer(store, io.BytesIO(buf.getvalue()))
    plain = buf.getvalue()
    info = store.blobs.put(plain)
    layer = store.index.put_layer(info.digest, "sha256:" + hashlib.sha256(plain).hexdigest(), info.size, len(plain),
                                  MEDIA_LAYER_TAR)
    image = write_image(store, ImageConfig("amd64", "linux", diff_ids=(layer.diff_id,)))
    with pytest.raises(UnsafeArchiveError):
        export_tar(store, image, io.BytesIO())
    with pytest.raises(UnsafeArchiveError):
        export_local(store, image, tmp_path / "out")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
