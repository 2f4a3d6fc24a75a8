"""`load` of an OCI archive whose index.json nests an image index (BuildKit's exporter with attestations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.platforms import host_arch
from tests.malformed.corpus import _file, _read_tar, _sha, _tar

INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def oci(tmp_path: Path) -> tuple[Path, str]:
    """An OCI archive of a one-layer image, and that image's id."""
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(_tar([_file("hello.txt", b"hello\n")]))
    root, archive = tmp_path / "src", tmp_path / "oci.tar"
    assert main(["--root", str(root), "import", str(rootfs), "src:1"]) == 0
    assert main(["--root", str(root), "save", "src:1", "--format", "oci", "-o", str(archive)]) == 0
    index = json.loads(dict((i.name, d) for i, d in _read_tar(archive))["index.json"])
    return archive, index["manifests"][0]["digest"]


def _nested(archive: Path, dest: Path, platforms: list[tuple[str, str]]) -> Path:
    members = [(i, d) for i, d in _read_tar(archive) if i.name != "index.json"]
    manifest = json.loads(dict((i.name, d) for i, d in _read_tar(archive))["index.json"])["manifests"][0]
    manifest.pop("annotations", None)
    inner = {"schemaVersion": 2, "mediaType": INDEX,
             "manifests": [{**manifest, "platform": {"os": os_, "architecture": arch}} for os_, arch in platforms]}
    raw = json.dumps(inner).encode()
    outer = {"schemaVersion": 2, "manifests": [{
        "mediaType": INDEX, "digest": "sha256:" + _sha(raw), "size": len(raw),
        "annotations": {"io.containerd.image.name": "docker.io/library/nested:1"}}]}
    members += [_file(f"blobs/sha256/{_sha(raw)}", raw), _file("index.json", json.dumps(outer).encode())]
    dest.write_bytes(_tar(members))
    return dest


def test_the_manifest_of_this_platform_is_loaded_from_a_nested_index(
        oci: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive, _ = oci
    nested = _nested(archive, tmp_path / "nested.tar", [("linux", host_arch()), ("unknown", "unknown")])
    root = tmp_path / "dst"
    capsys.readouterr()
    assert main(["--root", str(root), "load", "-i", str(nested)]) == 0
    assert capsys.readouterr().out.startswith("Loaded image: nested:1 ")
    assert main(["--root", str(root), "inspect", "nested:1"]) == 0


def test_an_index_without_this_platform_is_refused_clearly(
        oci: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive, _ = oci
    other = "s390x" if host_arch() != "s390x" else "arm64"
    nested = _nested(archive, tmp_path / "nested.tar", [("linux", other)])
    capsys.readouterr()
    assert main(["--root", str(tmp_path / "dst"), "load", "-i", str(nested)]) == 1
    err = capsys.readouterr().err
    assert f"is an image index with no manifests for linux/{host_arch()}" in err and "hint:" in err, err


def test_a_pulled_layer_is_recorded_only_when_every_promise_holds(tmp_path: Path) -> None:
    """The seam a registry client uses: `receive_layer` checks digest, size, diff_id and entries."""
    import gzip
    import hashlib
    import io

    from layerbuild.errors import DigestMismatchError, UnsafeArchiveError
    from layerbuild.image import Descriptor, receive_layer
    from layerbuild.store import Store

    tar = _tar([_file("etc/motd", b"hi\n")])
    blob = gzip.compress(tar, mtime=0)
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    good = Descriptor(gz, "sha256:" + _sha(blob), len(blob))
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    evil = gzip.compress(_tar([_file("../x", b"x")]), mtime=0)
    with Store(tmp_path / "store") as store:
        for desc, data, expected, error in [
            (Descriptor(gz, "sha256:" + _sha(b"other"), len(blob)), blob, diff_id, DigestMismatchError),
            (Descriptor(gz, good.digest, len(blob) - 1), blob, diff_id, UnsafeArchiveError),
            (good, blob, "sha256:" + "0" * 64, DigestMismatchError),
            (Descriptor(gz, "sha256:" + _sha(evil), len(evil)), evil, diff_id, UnsafeArchiveError),
        ]:
            with pytest.raises(error):
                receive_layer(store, io.BytesIO(data), desc, expected)
            assert store.index.list_layers() == () and list(store.blobs.list()) == []
        record = receive_layer(store, io.BytesIO(blob), good, diff_id)
        assert record.diff_id == diff_id and store.index.layers_by_diff_id(diff_id) == (record,)


def test_a_layer_linked_to_another_member_is_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`docker save` of two images that share a layer stores it once and links the second to it."""
    import tarfile

    from tests.malformed.corpus import _link

    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(_tar([_file("hello.txt", b"hello\n")]))
    root, archive = tmp_path / "src", tmp_path / "docker.tar"
    assert main(["--root", str(root), "import", str(rootfs), "src:1"]) == 0
    assert main(["--root", str(root), "save", "src:1", "-o", str(archive)]) == 0
    members = _read_tar(archive)
    manifest = json.loads(dict((i.name, d) for i, d in members)["manifest.json"])
    layer = manifest[0]["Layers"][0]
    second = {**manifest[0], "RepoTags": ["twin:1"], "Layers": ["twin/layer.tar"]}
    extra = [_link("twin/layer.tar", "../" + layer), _link("twin/hard.tar", layer, tarfile.LNKTYPE)]
    members = [(i, d) for i, d in members if i.name != "manifest.json"] + extra
    members.append(_file("manifest.json", json.dumps([manifest[0], second]).encode()))
    linked = tmp_path / "linked.tar"
    linked.write_bytes(_tar(members))
    capsys.readouterr()
    assert main(["--root", str(tmp_path / "dst"), "load", "-i", str(linked)]) == 0
    out = capsys.readouterr().out
    assert "Loaded image: src:1 " in out and "Loaded image: twin:1 " in out
