"""Every manifest, index and config that layerbuild writes validates against the OCI image-spec
schemas (tests/image/schemas.py), and Docker-typed ones against Docker's schema 2: in the store
(build, import, load), in `save` archives (oci gzip and zstd, docker) and in `build --output`."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import jsonschema
import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.image.manifest import Manifest
from layerbuild.store import Store
from tests.image import kit
from tests.image.schemas import validate

DOCKERFILE = """\
FROM scratch
COPY hello.txt /srv/hello.txt
ENV GREETING=hi PATH=/srv
LABEL org.example.kind=schema
EXPOSE 8080/tcp 53/udp
VOLUME /data
WORKDIR /srv
USER 1000:1000
HEALTHCHECK --interval=5s CMD ["/srv/check"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/srv/hello.txt"]
CMD ["--flag"]
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store with a built image (every config field a Dockerfile sets), and its outputs."""
    tmp = tmp_path_factory.mktemp("schemas")
    ctx = tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    root, out = tmp / "store", tmp / "out"
    layerbuild.build(ctx, root=root, tags=["schema:1"],
                     outputs=[("oci", str(out / "build.oci.tar")), ("docker", str(out / "build.docker.tar"))])
    return root, out


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _check_oci_archive(path: Path) -> int:
    """Validate index.json, each manifest and each config of an OCI archive; the count of documents."""
    files = _members(path)
    index = validate(files["index.json"], kit.MEDIA_INDEX)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    checked = 1
    todo = list(index["manifests"])
    while todo:
        desc = todo.pop(0)
        raw = files["blobs/sha256/" + desc["digest"].split(":", 1)[1]]
        doc = validate(raw, desc["mediaType"])
        checked += 1
        if desc["mediaType"] in (kit.MEDIA_INDEX, kit.DOCKER_MANIFEST_LIST):
            todo.extend(doc["manifests"])
            continue
        manifest = Manifest.from_json(raw)
        validate(files["blobs/sha256/" + manifest.config.digest.split(":", 1)[1]], manifest.config.media_type)
        checked += 1
    return checked


def _check_docker_archive(path: Path) -> None:
    files = _members(path)
    manifest = validate(files["manifest.json"], "docker-save-manifest")
    for entry in manifest:
        validate(files[entry["Config"]], kit.DOCKER_CONFIG)


def _check_store(root: Path) -> int:
    checked = 0
    with Store(root) as store:
        for record in store.index.list_images("manifest"):
            raw = store.blobs.read(record.digest)
            validate(raw, record.media_type)
            manifest = Manifest.from_json(raw)
            validate(store.blobs.read(manifest.config.digest), manifest.config.media_type)
            checked += 2
    return checked


def test_the_schemas_refuse_what_the_specs_forbid() -> None:
    """The schemas are not vacuous: each rule named here is one of the specs' MUSTs."""
    rng = random.Random(7)
    image = kit.random_image(rng)
    good = json.loads(image.manifest_bytes)
    config = json.loads(image.config_bytes)
    for doc, media in [
        ({**good, "schemaVersion": 1}, kit.MEDIA_MANIFEST),
        ({k: v for k, v in good.items() if k != "config"}, kit.MEDIA_MANIFEST),
        ({**good, "layers": [{**good["layers"][0], "size": -1}]}, kit.MEDIA_MANIFEST),
        ({**good, "layers": [{**good["layers"][0], "digest": "sha256"}]}, kit.MEDIA_MANIFEST),
        ({**good, "config": {**good["config"], "mediaType": "not a media type"}}, kit.MEDIA_MANIFEST),
        ({**good, "mediaType": kit.DOCKER_MANIFEST}, kit.MEDIA_MANIFEST),
        ({"schemaVersion": 2, "manifests": [{"mediaType": kit.MEDIA_MANIFEST, "digest": "x"}]}, kit.MEDIA_INDEX),
        ({"schemaVersion": 2, "manifests": [{**good["config"], "platform": {"os": "linux"}}]}, kit.MEDIA_INDEX),
        ({k: v for k, v in config.items() if k != "rootfs"}, kit.MEDIA_CONFIG),
        ({**config, "rootfs": {"type": "layer", "diff_ids": []}}, kit.MEDIA_CONFIG),
        ({**config, "created": "yesterday"}, kit.MEDIA_CONFIG),
        ({**config, "config": {"Env": ["NOEQUALS"]}}, kit.MEDIA_CONFIG),
        ({**good, "mediaType": kit.DOCKER_MANIFEST}, kit.DOCKER_MANIFEST),  # OCI types inside
        ({**good, "mediaType": kit.MEDIA_MANIFEST}, kit.DOCKER_MANIFEST),
    ]:
        with pytest.raises(jsonschema.ValidationError):
            validate(json.dumps(doc).encode(), media)
    validate(image.manifest_bytes, kit.MEDIA_MANIFEST)
    validate(image.config_bytes, kit.MEDIA_CONFIG)


def test_what_a_build_stores_and_outputs_validates(built: tuple[Path, Path]) -> None:
    root, out = built
    assert _check_store(root) >= 2
    assert _check_oci_archive(out / "build.oci.tar") == 3
    _check_docker_archive(out / "build.docker.tar")
    config = json.loads(_members(out / "build.docker.tar")[
        json.loads(_members(out / "build.docker.tar")["manifest.json"])[0]["Config"]])
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}  # the fields were there to check


@pytest.mark.parametrize("argv", [["--format", "oci"], ["--format", "docker"]], ids=["oci", "docker"])
def test_what_save_writes_validates(built: tuple[Path, Path], tmp_path: Path, argv: list[str]) -> None:
    root, _ = built
    dest = tmp_path / "saved.tar"
    assert main(["--root", str(root), "save", "schema:1", "-o", str(dest), *argv]) == 0
    if argv[1] == "oci":
        assert _check_oci_archive(dest) == 3
    else:
        _check_docker_archive(dest)


def test_oci_zstd_archives_and_loaded_and_imported_images_validate(built: tuple[Path, Path], tmp_path: Path) -> None:
    from layerbuild.image.archive import save
    from layerbuild.image.store_io import resolve_image

    root, out = built
    with Store(root) as store:
        save(store, resolve_image(store, "schema:1"), tmp_path / "zstd.tar", "oci", compression="zstd")
    assert _check_oci_archive(tmp_path / "zstd.tar") == 3
    other = tmp_path / "other"
    assert main(["--root", str(other), "load", "-i", str(out / "build.docker.tar")]) == 0
    assert main(["--root", str(other), "load", "-i", str(out / "build.oci.tar")]) == 0
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(__file__, arcname="etc/file")
    assert main(["--root", str(other), "import", str(rootfs), "imported:1"]) == 0
    assert _check_store(other) >= 4


def test_docker_typed_and_multi_platform_outputs_validate(tmp_path: Path) -> None:
    """An image with Docker media types and a multi-platform index, written to an OCI layout, keep
    their Docker schema 2 manifests and manifest list, which validate as such."""
    from layerbuild.image.ocilayout import OciLayoutWriter

    rng = random.Random(11)
    OciLayoutWriter(tmp_path / "list.tar").write_index(kit.random_index(rng, docker=True), ["kit:1"])
    files = _members(tmp_path / "list.tar")
    index = json.loads(files["index.json"])
    listed = files["blobs/sha256/" + index["manifests"][0]["digest"].split(":", 1)[1]]
    doc = validate(listed, kit.DOCKER_MANIFEST_LIST)
    for desc in doc["manifests"]:
        validate(files["blobs/sha256/" + desc["digest"].split(":", 1)[1]], kit.DOCKER_MANIFEST)
    OciLayoutWriter(tmp_path / "oci.tar").write_index(kit.random_index(rng), ["kit:1"])
    assert _check_oci_archive(tmp_path / "oci.tar") == 2 + 2 * len(kit.PLATFORMS)
