"""The protocol's archive implementations against a peer's (skopeo, umoci), both ways: what layerbuild
writes (random images of every kind, multi-platform indexes, layout directories) skopeo reads and
copies, and what skopeo writes the kit validates and `load` stores."""

from __future__ import annotations

import json
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.image.archive import export_oci
from layerbuild.image.archivefiles import DirFiles, TarFiles
from layerbuild.image.dockerarchive import DockerArchiveWriter, read_docker_archive
from layerbuild.image.ocilayout import OciLayoutImage, OciLayoutIndex, OciLayoutWriter, read_oci_layout
from layerbuild.image.protocol import copy_image
from layerbuild.image.store_io import resolve_image
from layerbuild.image.storeimage import StoreSink
from layerbuild.store import Store
from tests.image import kit
from tests.image.test_archive_interop import need

pytestmark = pytest.mark.integration


def skopeo(*args: str) -> str:
    return subprocess.run([need("skopeo"), *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_skopeo_reads_and_copies_a_multi_platform_index(tmp_path: Path, docker: bool) -> None:
    index = kit.random_index(random.Random(3), docker=docker)
    archive = tmp_path / "multi.tar"
    OciLayoutWriter(archive).write_index(index, ["kit:multi"])
    raw = skopeo("inspect", "--raw", f"oci-archive:{archive}")
    assert json.loads(raw)["mediaType"] == index.media_type
    arm = json.loads(skopeo("inspect", "--override-os", "linux", "--override-arch", "arm64",
                            "--override-variant", "v8", f"oci-archive:{archive}"))
    chosen = index.images[1][0]
    assert arm["Architecture"] == "arm64"
    assert arm["Layers"] == [la.digest for la in chosen.layers]
    # skopeo copies every platform, checking every blob against its digest, into a layout directory
    # (a Docker manifest list it converts to an OCI index there, as an OCI layout requires).
    copied = tmp_path / "copied"
    skopeo("copy", "--all", *([] if docker else ["--preserve-digests"]), f"oci-archive:{archive}",
           f"oci:{copied}:multi")
    files = DirFiles(copied)
    try:
        (entry,) = read_oci_layout(files)
        assert isinstance(entry.entry, OciLayoutIndex)
        kit.validate_index(entry.entry)
        assert (entry.entry.digest == index.digest) is not docker
        assert len(entry.entry.manifests) == len(index.images)
    finally:
        files.close()


@pytest.mark.parametrize("docker", [False, True], ids=["oci-types", "docker-types"])
def test_skopeo_reads_random_images_in_both_archive_formats(tmp_path: Path, docker: bool) -> None:
    image = kit.random_image(random.Random(5), compressions=kit.COMPRESSIONS, docker=docker)
    oci, dkr = tmp_path / "img.oci.tar", tmp_path / "img.docker.tar"
    copy_image(image, OciLayoutWriter(oci), ["kit:1"])
    copy_image(image, DockerArchiveWriter(dkr), ["kit:1"])
    for ref in (f"oci-archive:{oci}", f"docker-archive:{dkr}"):
        inspected = json.loads(skopeo("inspect", ref))
        assert len(inspected["Layers"]) == len(image.layers), ref
        assert inspected["Env"] == json.loads(image.config_bytes)["config"]["Env"], ref
    # skopeo's docker archive from our OCI one (skopeo puts no zstd layer in a docker image, so the
    # docker archive of ours is its source): our reader and the kit accept it.
    theirs = tmp_path / "theirs.tar"
    skopeo("copy", f"docker-archive:{dkr}", f"docker-archive:{theirs}:peer/kit:2")
    with tarfile.open(theirs) as tar:
        (read,) = read_docker_archive(TarFiles(tar))
        kit.validate_image(read)
        assert read.tags == ("peer/kit:2",)
        assert [la.diff_id for la in read.layers] == [la.diff_id for la in image.layers]


def test_a_layout_directory_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """layerbuild's layout directory is read by skopeo and umoci; skopeo's is loaded by `load -i DIR`."""
    root = tmp_path / "store"
    with Store(root) as store:
        copy_image(kit.random_image(random.Random(9), layers=2), StoreSink(store), ["kit:1"])
        image = resolve_image(store, "kit:1")
        export_oci(store, image, tmp_path / "ours", directory=True)
    assert json.loads(skopeo("inspect", f"oci:{tmp_path / 'ours'}:1"))["Digest"]
    subprocess.run([need("umoci"), "unpack", "--rootless", "--image", f"{tmp_path / 'ours'}:1",
                    str(tmp_path / "bundle")], check=True, capture_output=True)
    assert (tmp_path / "bundle" / "rootfs").is_dir()
    theirs = tmp_path / "theirs"
    skopeo("copy", f"oci:{tmp_path / 'ours'}:1", f"oci:{theirs}:peer/kit:3")
    files = DirFiles(theirs)
    try:
        (entry,) = read_oci_layout(files)
        assert isinstance(entry.entry, OciLayoutImage)
        kit.validate_image(entry.entry)
    finally:
        files.close()
    capsys.readouterr()
    assert main(["--root", str(tmp_path / "fresh"), "load", "-i", str(theirs)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Loaded image: peer/kit:3 ") and out.split()[-1] == image.id
    assert main(["--root", str(tmp_path / "fresh"), "fsck"]) == 0
