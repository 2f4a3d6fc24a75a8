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
