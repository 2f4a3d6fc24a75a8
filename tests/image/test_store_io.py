"""Images written into the store and found again by tag, id (full or short) and manifest digest."""

from __future__ import annotations

import json

import pytest

from layerbuild.errors import StoreError, UsageError
from layerbuild.image import (
    ContainerConfig,
    HistoryEntry,
    ImageConfig,
    ImageNotFoundError,
    Manifest,
    import_rootfs,
    list_images,
    resolve_image,
    split_tag,
    tag_image,
    untag_image,
    write_image,
)
from layerbuild.store import MEDIA_CONFIG, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST, Store
from tests.image.conftest import MakeLayer


def two_layer_config(make_layer: MakeLayer, created: str = "2024-01-01T00:00:00Z") -> ImageConfig:
    base = make_layer({"etc/hostname": b"box\n", "bin": None})
    app = make_layer({"app/run": b"#!/bin/sh\n"})
    return (
        ImageConfig("amd64", "linux", created=created)
        .with_layer(base.diff_id, HistoryEntry(created, "COPY rootfs /"))
        .with_history(HistoryEntry(created, "ENV A=1"))
        .with_env("A", "1")
        .with_layer(app.diff_id, HistoryEntry(created, "COPY app /app"))
        .with_config(cmd=("/app/run",))
    )


def test_write_and_resolve_every_way(store: Store, make_layer: MakeLayer) -> None:
    config = two_layer_config(make_layer)
    image = write_image(store, config, ["app", "app:1.0"])
    assert image.tags == ("app:latest", "app:1.0")
    assert image.id == image.config_digest and image.short_id == image.id[7:19]

    manifest = json.loads(store.blobs.read(image.manifest_digest))
    assert manifest["mediaType"] == MEDIA_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": MEDIA_CONFIG, "digest": image.config_digest,
                                  "size": len(config.to_json())}
    assert [lay["mediaType"] for lay in manifest["layers"]] == [MEDIA_LAYER_ZSTD] * 2
    assert [lay["digest"] for lay in manifest["layers"]] == [r.digest for r in image.layers]
    assert store.blobs.read(image.config_digest) == config.to_json()

    hexid = image.id.split(":")[1]
    for ref in ("app", "app:latest", "app:1.0", image.id, hexid, hexid[:12], "sha256:" + hexid[:12],
                image.manifest_digest, "app@" + image.manifest_digest):
        found = resolve_image(store, ref)
        assert found.manifest_digest == image.manifest_digest, ref
        assert found.config == config
        assert set(found.tags) == {"app:latest", "app:1.0"}
        assert found.layers == image.layers
    assert image.size == sum(r.diff_size for r in image.layers)

    # Writing the same image again is idempotent: same digests.
    again = write_image(store, config, ["other"])
    assert (again.manifest_digest, again.config_digest) == (image.manifest_digest, image.config_digest)


def test_index_rows_reference_what_prune_must_keep(store: Store, make_layer: MakeLayer) -> None:
    image = write_image(store, two_layer_config(make_layer), ["keep"])
    manifest = store.index.get_image(image.manifest_digest)
    config = store.index.get_image(image.config_digest)
    assert manifest is not None and manifest.kind == "manifest"
    assert set(manifest.refs) == {image.config_digest, *(r.digest for r in image.layers)}
    assert config is not None and set(config.refs) == set(image.config.diff_ids)
    store.prune(all=True, keep_storage=0, grace=0)
    assert resolve_image(store, "keep").config == image.config  # everything is still there
    assert store.fsck().ok


def test_unknown_image_suggests_close_names(store: Store, make_layer: MakeLayer) -> None:
    write_image(store, two_layer_config(make_layer), ["webserver:1.0"])
    with pytest.raises(ImageNotFoundError) as info:
        resolve_image(store, "webservr:1.0")
    assert info.value.exit_code == 2
    assert "webserver:1.0" in (info.value.hint or "")
    with pytest.raises(ImageNotFoundError):
        resolve_image(store, "0123456789ab")
    with pytest.raises(ImageNotFoundError, match="no such image"):
        resolve_image(store, "with space")


def test_short_manifest_digest_resolves_too(store: Store, make_layer: MakeLayer) -> None:
    image = write_image(store, two_layer_config(make_layer), ["m"])
    assert resolve_image(store, image.manifest_digest[7:21]).id == image.id
    # A name that happens to be hex is a tag first, as in Docker.
    tag_image(store, "m", "abcdefabcdef")
    assert resolve_image(store, "abcdefabcdef").id == image.id
    assert untag_image(store, "abcdefabcdef") == ("abcdefabcdef:latest",)
    assert resolve_image(store, "m").tags == ("m:latest",)


def test_missing_layer_is_a_store_error(store: Store) -> None:
    config = ImageConfig("amd64", "linux", diff_ids=("sha256:" + "9" * 64,))
    with pytest.raises(StoreError, match="not in the store"):
        write_image(store, config, ["x"])


def test_list_tag_untag(store: Store, make_layer: MakeLayer) -> None:
    old = write_image(store, two_layer_config(make_layer, "2020-01-01T00:00:00Z"), ["old:1"])
    new = write_image(store, two_layer_config(make_layer, "2024-01-01T00:00:00Z"), ["new:1", "new:2"])
    assert [(t, i.id) for t, i in list_images(store)] == [("new:1", new.id), ("new:2", new.id), ("old:1", old.id)]

    assert tag_image(store, "old:1", "registry.local:5000/team/old") == "registry.local:5000/team/old:latest"
    assert split_tag("registry.local:5000/team/old") == ("registry.local:5000/team/old", "latest")
    assert resolve_image(store, "registry.local:5000/team/old").id == old.id

    assert untag_image(store, "new:1") == ("new:1",)
    with pytest.raises(UsageError, match="several tags"):
        untag_image(store, old.short_id)
    assert set(untag_image(store, old.short_id, force=True)) == {"old:1", "registry.local:5000/team/old:latest"}
    assert [t for t, _ in list_images(store)] == ["new:2"]
    # The blobs stay until prune: the image is still reachable by id.
    assert resolve_image(store, old.id).tags == ()
    with pytest.raises(ImageNotFoundError):
        untag_image(store, "old:1")


def test_reads_an_imported_image(store: Store, tmp_path: object) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    buf.seek(0)
    result = import_rootfs(store, buf, "imported")
    image = resolve_image(store, "imported")
    assert image.manifest_digest == result.manifest and image.id == result.config
    assert image.config.history[0].created_by == "layerbuild import"
    assert Manifest.from_json(store.blobs.read(result.manifest)).config.digest == result.config
    assert image.config.config == ContainerConfig()


def test_names_match_as_docker_matches_them(store: Store) -> None:
    """A pulled image is stored as `docker.io/library/busybox:latest`; `busybox`, `busybox:latest` and
    `docker.io/busybox` find it (and `rmi busybox` removes it), as in docker."""
    from layerbuild.image.store_io import find_tag, tag_names, untag_image

    assert tag_names("busybox") == ("busybox:latest", "docker.io/library/busybox:latest")
    assert tag_names("docker.io/library/busybox") == ("docker.io/library/busybox:latest", "busybox:latest")
    assert tag_names("127.0.0.1:5000/app:1") == ("127.0.0.1:5000/app:1",)
    assert tag_names("user/app:2") == ("user/app:2", "docker.io/user/app:2")
    assert tag_names("Bad Name") == ()
    image = write_image(store, ImageConfig("amd64", "linux"), ["docker.io/library/busybox:latest"])
    for ref in ("busybox", "busybox:latest", "docker.io/busybox", "index.docker.io/library/busybox:latest"):
        assert resolve_image(store, ref).manifest_digest == image.manifest_digest, ref
    assert find_tag(store, "busybox:1") is None
    assert untag_image(store, "busybox") == ("docker.io/library/busybox:latest",)
