"""The image protocol's contract, checked with the kit (tests/image/kit.py) on every implementation:
the store, docker save archives and OCI layouts (tar and directory), read and written."""

from __future__ import annotations

import json
import os
import random
import tarfile
from pathlib import Path

import pytest

from layerbuild.errors import DigestMismatchError, LayerbuildError
from layerbuild.image.archivefiles import DirFiles, TarFiles
from layerbuild.image.dockerarchive import DockerArchiveWriter, read_docker_archive
from layerbuild.image.ocilayout import OciLayoutImage, OciLayoutIndex, OciLayoutWriter, read_oci_layout
from layerbuild.image.protocol import copy_image
from layerbuild.image.store_io import load_image
from layerbuild.image.storeimage import StoreSink, store_image
from layerbuild.store import Store
from layerbuild.store.blobs import CorruptBlobError
from tests.image import kit

CASES = [
    pytest.param(dict(compressions=("gzip",), docker=False), id="oci-gzip"),
    pytest.param(dict(compressions=("zstd",), docker=False), id="oci-zstd"),
    pytest.param(dict(compressions=("tar",), docker=False), id="oci-tar"),
    pytest.param(dict(compressions=kit.COMPRESSIONS, docker=False), id="oci-mixed"),
    pytest.param(dict(compressions=("gzip", "tar"), docker=True), id="docker-types"),
]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(request.node.name)


# --- the kit itself: random images are valid, and the validator catches what is wrong -------------

@pytest.mark.parametrize("kind", CASES)
def test_random_images_are_valid(rng: random.Random, kind: dict) -> None:
    kit.validate_image(kit.random_image(rng, **kind))


def test_random_indexes_are_valid(rng: random.Random) -> None:
    kit.validate_index(kit.random_index(rng))
    kit.validate_index(kit.random_index(rng, docker=True))


def test_the_validator_and_the_readers_catch_a_lying_layer(rng: random.Random) -> None:
    image = kit.random_image(rng, compressions=("gzip",))
    good = image.layers[0]
    assert isinstance(good, kit.MemoryLayer)
    other = kit.random_tar(rng)
    # The blob another tar, under the first one's digest and diff_id.
    liar = _Lying(kit.compress(other, "gzip"), good.tar, good.media_type, good.digest)
    kit.assert_readers_catch(liar)
    with pytest.raises(DigestMismatchError):
        kit.validate_layer(liar)
    no_rootfs = json.loads(image.config_bytes)
    no_rootfs["rootfs"]["diff_ids"] = no_rootfs["rootfs"]["diff_ids"][:1]
    with pytest.raises(AssertionError):
        kit.validate_image(kit.MemoryImage(image.layers, json.dumps(no_rootfs).encode()))


class _Lying(kit.MemoryLayer):
    def __init__(self, blob: bytes, tar: bytes, media_type: str, digest: str) -> None:
        super().__init__(blob, tar, media_type)
        object.__setattr__(self, "_claimed", digest)

    @property
    def digest(self) -> str:
        return self._claimed  # type: ignore[attr-defined,no-any-return]

    @property
    def size(self) -> int:
        return len(self.blob)


# --- the store ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CASES)
def test_the_store_receives_and_gives_back_a_valid_image(store: Store, rng: random.Random, kind: dict) -> None:
    source = kit.random_image(rng, **kind)
    digest = copy_image(source, StoreSink(store), ["kit:1"])
    assert store.index.get_tag("kit:1").digest == digest  # type: ignore[union-attr]
    image = store_image(store, "kit:1")
    kit.validate_image(image)
    assert image.config_bytes == source.config_bytes  # the config, and so the image id, kept as given
    assert [la.diff_id for la in image.layers] == [la.diff_id for la in source.layers]
    kit.validate_image(store_image(store, "kit:1", compression="gzip"))
    assert store.fsck(repair=False).ok


@pytest.mark.store_corrupted
def test_a_damaged_store_blob_is_caught_by_the_store_layers(store: Store, rng: random.Random) -> None:
    copy_image(kit.random_image(rng, layers=2), StoreSink(store), ["kit:1"])
    image = store_image(store, "kit:1")
    layer = image.layers[1]
    kit.flip_byte(store.blobs.path(layer.digest), layer.size // 2)
    with pytest.raises(CorruptBlobError):
        kit.validate_layer(layer)
    kit.assert_readers_catch(layer)
    kit.validate_layer(image.layers[0])


def test_a_failed_copy_into_the_store_moves_no_tag(store: Store, rng: random.Random) -> None:
    first = kit.random_image(rng, layers=1)
    old = copy_image(first, StoreSink(store), ["kit:1"])
    source = kit.random_image(rng, layers=3)
    layer = source.layers[1]
    assert isinstance(layer, kit.MemoryLayer)
    lying = kit.MemoryImage((source.layers[0], _Lying(kit.compress(kit.random_tar(rng), "gzip"), layer.tar,
                                                      layer.media_type, layer.digest), source.layers[2]),
                            source.config_bytes)
    images_before = store.index.list_images("manifest")
    blobs_before = set(store.blobs.list())
    with pytest.raises(DigestMismatchError):
        copy_image(lying, StoreSink(store), ["kit:1", "kit:2"])
    assert store.index.get_tag("kit:1").digest == old  # type: ignore[union-attr]
    assert store.index.get_tag("kit:2") is None
    assert store.index.list_images("manifest") == images_before
    assert len(set(store.blobs.list()) - blobs_before) == 1  # the first layer, stored before the lie
    store.prune(grace=0)  # unreferenced and unleased: it goes, and what kit:1 needs stays
    assert set(store.blobs.list()) == blobs_before
    kit.validate_image(store_image(store, "kit:1"))


# --- docker save archives ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CASES)
def test_a_docker_archive_written_reads_back_valid(tmp_path: Path, rng: random.Random, kind: dict) -> None:
    source = kit.random_image(rng, **kind)
    dest = tmp_path / "img.tar"
    digest = copy_image(source, DockerArchiveWriter(dest), ["docker.io/library/kit:1"])
    with tarfile.open(dest) as tar:
        manifest = tar.extractfile("manifest.json").read()  # type: ignore[union-attr]
        kit.validate(manifest, "docker-save-manifest")
        (image,) = read_docker_archive(TarFiles(tar))
        kit.validate_image(image)
        assert image.digest == digest
        assert image.tags == ("kit:1",)
        assert image.config_bytes == source.config_bytes
        assert all(la.media_type == "application/vnd.docker.image.rootfs.diff.tar" for la in image.layers)


def test_a_tampered_docker_archive_layer_is_caught(tmp_path: Path, rng: random.Random) -> None:
    dest = tmp_path / "img.tar"
    copy_image(kit.random_image(rng, layers=2), DockerArchiveWriter(dest))
    with tarfile.open(dest) as tar:
        name = json.load(tar.extractfile("manifest.json"))[0]["Layers"][1]  # type: ignore[arg-type]
    kit.damage_tar_member(dest, name)
    with tarfile.open(dest) as tar:
        (image,) = read_docker_archive(TarFiles(tar))
        kit.validate_layer(image.layers[0])
        kit.assert_readers_catch(image.layers[1])


def test_a_failed_archive_write_leaves_nothing(tmp_path: Path, rng: random.Random) -> None:
    source = kit.random_image(rng, layers=3)
    layer = source.layers[2]
    assert isinstance(layer, kit.MemoryLayer)
    middle = len(layer.blob) // 2
    damaged = layer.blob[:middle] + bytes([layer.blob[middle] ^ 1]) + layer.blob[middle + 1:]
    lying = kit.MemoryImage((*source.layers[:2], _Lying(damaged, layer.tar, layer.media_type, layer.digest)),
                            source.config_bytes)
    out = tmp_path / "out"
    out.mkdir()
    for writer in (DockerArchiveWriter(out / "d.tar"), OciLayoutWriter(out / "o.tar"),
                   OciLayoutWriter(out / "dir", directory=True)):
        with pytest.raises((DigestMismatchError, LayerbuildError)):
            copy_image(lying, writer)
        assert list(out.iterdir()) == []


# --- OCI layouts -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("directory", [False, True], ids=["tar", "dir"])
@pytest.mark.parametrize("kind", CASES)
def test_an_oci_layout_written_reads_back_the_same_image(tmp_path: Path, rng: random.Random, kind: dict,
                                                         directory: bool) -> None:
    source = kit.random_image(rng, **kind)
    dest = tmp_path / "layout"
    assert copy_image(source, OciLayoutWriter(dest, directory=directory), ["kit:1"]) == source.digest
    with _files(dest, directory) as files:
        kit.validate(_member(files, "index.json"), kit.MEDIA_INDEX)
        (entry,) = read_oci_layout(files)
        assert isinstance(entry.entry, OciLayoutImage) and entry.tags == ()  # "1": a bare tag is no name
        kit.validate_image(entry.entry)
        assert entry.entry.manifest_bytes == source.manifest_bytes


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_a_multi_platform_index_round_trips(tmp_path: Path, rng: random.Random, docker: bool) -> None:
    index = kit.random_index(rng, docker=docker)
    dest = tmp_path / "multi.tar"
    assert OciLayoutWriter(dest).write_index(index, ["kit:multi"]) == index.digest
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        assert len(names) == len(set(names))  # the shared base layer is stored once
        (entry,) = read_oci_layout(TarFiles(tar))
        assert isinstance(entry.entry, OciLayoutIndex)
        kit.validate_index(entry.entry)
        assert [str(p) for _, p in entry.entry.manifests] == ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]


@pytest.mark.parametrize("directory", [False, True], ids=["tar", "dir"])
def test_a_tampered_oci_layer_is_caught(tmp_path: Path, rng: random.Random, directory: bool) -> None:
    source = kit.random_image(rng, layers=2, compressions=("gzip",))
    dest = tmp_path / "layout"
    copy_image(source, OciLayoutWriter(dest, directory=directory))
    name = "blobs/sha256/" + source.layers[1].digest.split(":", 1)[1]
    if directory:
        kit.flip_byte(dest / name, source.layers[1].size // 2)
    else:
        kit.damage_tar_member(dest, name)
    with _files(dest, directory) as files:
        (entry,) = read_oci_layout(files)
        assert isinstance(entry.entry, OciLayoutImage)
        kit.validate_layer(entry.entry.layers[0])
        kit.assert_readers_catch(entry.entry.layers[1])


def test_a_layout_directory_is_read_without_following_links(tmp_path: Path, rng: random.Random) -> None:
    source = kit.random_image(rng, layers=1)
    dest = tmp_path / "layout"
    copy_image(source, OciLayoutWriter(dest, directory=True))
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    (dest / "index.json").unlink()
    os.symlink(outside, dest / "index.json")
    with pytest.raises(LayerbuildError, match=r"index\.json"):
        list(read_oci_layout(DirFiles(dest)))


# --- across implementations ---------------------------------------------------------------------------

def test_one_image_through_every_implementation(tmp_path: Path, rng: random.Random) -> None:
    """memory → OCI tar → store → docker archive → store → OCI directory: the image id and diff_ids
    never change, and each hop is valid."""
    source = kit.random_image(rng, compressions=kit.COMPRESSIONS)
    copy_image(source, OciLayoutWriter(tmp_path / "a.tar"))
    with Store(tmp_path / "s1") as s1, tarfile.open(tmp_path / "a.tar") as tar:
        (entry,) = read_oci_layout(TarFiles(tar))
        copy_image(entry.entry, StoreSink(s1), ["hop:1"])  # type: ignore[arg-type]
        copy_image(store_image(s1, "hop:1"), DockerArchiveWriter(tmp_path / "b.tar"), ["hop:1"])
    with Store(tmp_path / "s2") as s2, tarfile.open(tmp_path / "b.tar") as tar:
        (image,) = read_docker_archive(TarFiles(tar))
        copy_image(image, StoreSink(s2), image.tags)
        copy_image(store_image(s2, "hop:1", compression="gzip"), OciLayoutWriter(tmp_path / "c", directory=True))
        stored = load_image(s2, s2.index.get_tag("hop:1").digest)  # type: ignore[union-attr]
    files = DirFiles(tmp_path / "c")
    (last,) = read_oci_layout(files)
    kit.validate_image(last.entry)  # type: ignore[arg-type]
    assert last.entry.config_bytes == source.config_bytes  # type: ignore[union-attr]
    assert stored.id == source.manifest.config.digest
    files.close()


def _files(dest: Path, directory: bool):  # type: ignore[no-untyped-def]
    import contextlib

    @contextlib.contextmanager
    def opened():  # type: ignore[no-untyped-def]
        if directory:
            files = DirFiles(dest)
            try:
                yield files
            finally:
                files.close()
        else:
            with tarfile.open(dest) as tar:
                yield TarFiles(tar)

    return opened()


def _member(files, name: str) -> bytes:  # type: ignore[no-untyped-def]
    size, src = files.member(name)
    return src.read(size)  # type: ignore[no-any-return]
