"""Exports and unpacks verify the blobs they read: a damaged layer blob is named, with fsck as the way out,
and nothing half-written is left at the destination."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.image import HistoryEntry, ImageConfig, StoredImage, export_local, export_tar, write_image
from layerbuild.image.archive import save
from layerbuild.runtime.bundle import write_bundle
from layerbuild.runtime.sandbox import lower_dirs_for
from layerbuild.store import Store
from layerbuild.store.blobs import CorruptBlobError
from tests.image.conftest import MakeLayer

pytestmark = pytest.mark.store_corrupted

TREE = {"etc/a": b"a" * 5000, "etc/b": os.urandom(3 << 20), "bin": None}
OTHER = {"other/file": b"something else entirely" * 300}


def _image(store: Store, make_layer: MakeLayer, damage: str) -> tuple[StoredImage, str]:
    """An image of one layer, whose blob is then damaged: `replaced` by another valid zstd layer,
    `truncated` to half its size, or `flipped`: bytes in the middle changed (the decoder fails before
    the end of the blob, where the digest is checked)."""
    layer = make_layer(TREE)
    other = make_layer(OTHER)
    config = ImageConfig("amd64", "linux").with_layer(layer.diff_id, HistoryEntry(created_by="COPY"))
    image = write_image(store, config, ["damaged:1"])
    path = store.blobs.path(layer.digest)
    os.chmod(path, 0o644)
    if damage == "replaced":
        path.write_bytes(store.blobs.path(other.digest).read_bytes())
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
        path.write_bytes(bytes(data))
    return image, layer.digest


def _save_oci_zstd(store: Store, image: StoredImage, dest: Path) -> None:
    save(store, image, dest, "oci", compression="zstd")


def _save_oci_gzip(store: Store, image: StoredImage, dest: Path) -> None:
    save(store, image, dest, "oci")


def _save_docker(store: Store, image: StoredImage, dest: Path) -> None:
    save(store, image, dest, "docker")


def _export_tar(store: Store, image: StoredImage, dest: Path) -> None:
    export_tar(store, image, dest)


def _export_local(store: Store, image: StoredImage, dest: Path) -> None:
    export_local(store, image, dest)


def _bundle(store: Store, image: StoredImage, dest: Path) -> None:
    write_bundle(store, image, dest, ["/bin/true"])


def _snapshot(store: Store, image: StoredImage, dest: Path) -> None:
    lower_dirs_for(store, [layer.diff_id for layer in image.layers])


def _rootfs(store: Store, image: StoredImage, dest: Path) -> None:
    """A build's view of a stage's filesystem (one layer: applied by copying)."""
    from layerbuild.worker.rootfs import RootfsCache

    cache = RootfsCache(store)
    try:
        cache.get("f" * 64, tuple(layer.diff_id for layer in image.layers))
    finally:
        cache.close()


EXPORTS: dict[str, Callable[[Store, StoredImage, Path], None]] = {
    "save-oci-zstd": _save_oci_zstd, "save-oci-gzip": _save_oci_gzip, "save-docker": _save_docker,
    "tar": _export_tar, "local": _export_local, "bundle": _bundle, "snapshot": _snapshot,
    "rootfs": _rootfs,
}


@pytest.mark.parametrize("damage", ["replaced", "truncated", "flipped"])
@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_a_damaged_layer_blob_fails_the_export_by_name(
    store: Store, make_layer: MakeLayer, tmp_path: Path, kind: str, damage: str
) -> None:
    if kind == "snapshot" and os.geteuid() != 0:
        pytest.skip("unpacking a snapshot unprivileged goes through a user namespace child")
    image, digest = _image(store, make_layer, damage)
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "dest"
    with pytest.raises(CorruptBlobError) as err:
        EXPORTS[kind](store, image, dest)
    assert digest in str(err.value)
    assert "fsck" in (err.value.hint or "")
    if kind == "bundle":
        assert not (dest / "rootfs").exists() or not any((dest / "rootfs").iterdir())
        assert [p.name for p in dest.iterdir()] in ([], ["rootfs"])
    else:
        assert list(out.iterdir()) == []  # no partial file, directory or temp left beside it
    assert list(store.snapshots.layout.snapshots.iterdir()) == []
    # No gzip variant of the damaged blob was made and kept.
    assert [r.media_type for r in store.index.layers_by_diff_id(image.layers[0].diff_id)] == [
        image.layers[0].media_type
    ]


def test_an_intact_image_still_exports(store: Store, make_layer: MakeLayer, tmp_path: Path) -> None:
    layer = make_layer(TREE)
    config = ImageConfig("amd64", "linux").with_layer(layer.diff_id, HistoryEntry(created_by="COPY"))
    image = write_image(store, config, ["ok:1"])
    for kind, export in sorted(EXPORTS.items()):
        if kind == "snapshot" and os.geteuid() != 0:
            continue
        export(store, image, tmp_path / kind)
    assert (tmp_path / "local" / "etc" / "b").read_bytes() == TREE["etc/b"]
    assert (tmp_path / "bundle" / "rootfs" / "etc" / "a").read_bytes() == TREE["etc/a"]


@pytest.mark.parametrize("damage", ["replaced", "truncated", "flipped"])
def test_save_cli_reports_the_damaged_blob(
    store: Store, make_layer: MakeLayer, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    _, digest = _image(store, make_layer, damage)
    dest = tmp_path / "out.tar"
    code = main(["--root", str(store.root), "save", "damaged:1", "-o", str(dest), "--format", "docker"])
    err = capsys.readouterr().err
    assert code != 0
    assert digest in err and "fsck" in err
    assert "bug" not in err and "Traceback" not in err
    assert not dest.exists()


def test_a_damaged_gzip_variant_fails_the_oci_export(store: Store, make_layer: MakeLayer, tmp_path: Path) -> None:
    """The gzip copy an earlier OCI export made and kept is verified when a later export reads it."""
    layer = make_layer(TREE)
    config = ImageConfig("amd64", "linux").with_layer(layer.diff_id, HistoryEntry(created_by="COPY"))
    image = write_image(store, config, ["gz:1"])
    save(store, image, tmp_path / "first.tar", "oci")
    (variant,) = [r for r in store.index.layers_by_diff_id(layer.diff_id) if r.digest != layer.digest]
    path = store.blobs.path(variant.digest)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptBlobError, match=variant.digest):
        save(store, image, tmp_path / "second.tar", "oci")
    assert not (tmp_path / "second.tar").exists()
