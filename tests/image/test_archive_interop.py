"""`save` and `--output type=oci|docker`: archives that skopeo, umoci and docker read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main

pytestmark = pytest.mark.integration

DOCKERFILE = """\
FROM scratch
COPY hello.txt /srv/hello.txt
COPY sub/ /srv/sub/
ENV GREETING=hi
CMD ["/srv/hello.txt"]
"""


@pytest.fixture
def built(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    (ctx / "sub" / "a.txt").write_text("a\n")
    root = tmp_path / "store"
    layerbuild.build(ctx, root=root, tags=["arch:1"])
    return root


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (scripts/setup installs it)")
    return path


def test_docker_archive(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.tar"
    assert main(["--root", str(built), "save", "arch:1", "-o", str(out)]) == 0
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["arch:1"]
        diff_ids = ["sha256:" + hashlib.sha256(tar.extractfile(name).read()).hexdigest()  # type: ignore[union-attr]
                    for name in manifest[0]["Layers"]]
    assert diff_ids == config["rootfs"]["diff_ids"]
    inspected = json.loads(subprocess.run([need("skopeo"), "inspect", f"docker-archive:{out}"],
                                          capture_output=True, text=True, check=True).stdout)
    assert "GREETING=hi" in inspected["Env"]
    if docker_engine():
        subprocess.run(["docker", "load", "-i", str(out)], check=True, capture_output=True)


def docker_engine() -> bool:
    """Whether a Docker engine answers here (optional: the check above is extra when one does)."""
    if shutil.which("docker") is None or not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def test_oci_archive_read_by_skopeo_and_umoci(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "img.oci.tar"
    assert main(["--root", str(built), "save", "--format", "oci", "arch:1", "-o", str(out)]) == 0
    inspected = json.loads(subprocess.run([need("skopeo"), "inspect", f"oci-archive:{out}"],
                                          capture_output=True, text=True, check=True).stdout)
    assert inspected["Os"] == "linux" and len(inspected["Layers"]) == 2
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    subprocess.run([need("umoci"), "unpack", "--image", f"{layout}:1", str(bundle)], check=True,
                   capture_output=True)
    assert (bundle / "rootfs" / "srv" / "hello.txt").read_text() == "hello\n"
    assert (bundle / "rootfs" / "srv" / "sub" / "a.txt").read_text() == "a\n"


def test_build_output_oci_and_docker(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    (ctx / "f").write_text("f\n")
    oci, docker = tmp_path / "o.tar", tmp_path / "d.tar"
    code = main(["--root", str(tmp_path / "s"), "build", "-q", "-t", "out:1", "--output", f"type=oci,dest={oci}",
                 "--output", f"type=docker,dest={docker}", str(ctx)])
    assert code == 0
    with tarfile.open(oci) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1"
        assert tar.extractfile("oci-layout").read() == b'{"imageLayoutVersion":"1.0.0"}'  # type: ignore[union-attr]
    with tarfile.open(docker) as tar:
        assert json.load(tar.extractfile("manifest.json"))[0]["RepoTags"] == ["out:1"]  # type: ignore[arg-type]


def test_load_round_trips_and_reads_a_peers_archive(built: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    ours = tmp_path / "ours.tar"
    assert main(["--root", str(built), "save", "arch:1", "-o", str(ours)]) == 0
    oci = tmp_path / "ours.oci.tar"
    assert main(["--root", str(built), "save", "--format", "oci", "arch:1", "-o", str(oci)]) == 0
    # A docker archive written by skopeo (another implementation) from our OCI export.
    theirs = tmp_path / "theirs.tar"
    subprocess.run([need("skopeo"), "copy", f"oci-archive:{oci}", f"docker-archive:{theirs}:peer/arch:2"],
                   check=True, capture_output=True)
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    for archive in (ours, oci, theirs):
        assert main(["--root", str(fresh), "load", "-i", str(archive)]) == 0
    out = capsys.readouterr().out
    assert "Loaded image: arch:1 sha256:" in out and "Loaded image: peer/arch:2 sha256:" in out
    ids = {line.split()[-1] for line in out.splitlines()}
    assert len(ids) == 1, "the same config gives the same image id however it travelled"
    assert main(["--root", str(fresh), "fsck"]) == 0


def test_load_refuses_a_tampered_archive(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.tar"
    assert main(["--root", str(built), "save", "arch:1", "-o", str(good)]) == 0
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name.endswith("layer.tar") and data is not None:
                import io

                payload = bytearray(data.read())
                payload[600] ^= 0xFF  # flip a byte inside the first file's content
                member.size = len(payload)
                dst.addfile(member, io.BytesIO(bytes(payload)))
                continue
            dst.addfile(member, data)
    capsys.readouterr()
    assert main(["--root", str(tmp_path / "s2"), "load", "-i", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "layer.tar" in err and "hint: the archive is damaged" in err, err  # names the layer it refused
    assert main(["--root", str(tmp_path / "s2"), "images", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_load_keeps_the_config_bytes_and_so_the_image_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config written by another tool (different key order and spacing) keeps its digest: the image id."""
    import io

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        data = b"x\n"
        info = tarfile.TarInfo("x")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = (b'{"os": "linux", "architecture": "amd64", "config": {"Cmd": ["/x"]},\n'
              b' "rootfs": {"type": "layers", "diff_ids": ["' + diff_id.encode() + b'"]}}')
    archive = tmp_path / "foreign.tar"
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["foreign:1"], "Layers": ["l/layer.tar"]}]).encode()
    with tarfile.open(archive, "w") as t:
        for name, payload in (("c.json", config), ("l/layer.tar", layer.getvalue()), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    assert main(["--root", str(tmp_path / "s"), "load", "-i", str(archive)]) == 0
    assert capsys.readouterr().out.split()[-1] == "sha256:" + hashlib.sha256(config).hexdigest()
