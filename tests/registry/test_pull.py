"""`layerbuild pull` and builds that pull, against real registries that skopeo pushed to: multi-platform
OCI indexes and Docker archives, plain/TLS/token registries, platform selection, up-to-date pulls, repo
digests, faults through the proxy (wrong or truncated blobs), pinned digests, `build --pull`."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.image.ocilayout import OciLayoutWriter
from layerbuild.image.store_io import load_image
from layerbuild.reference import parse_reference
from layerbuild.registry.pull import PullEvent, pull
from layerbuild.store import Store
from tests.cli.kit import busybox_root, lb
from tests.conftest import fsck_problems
from tests.image import kit
from tests.image.test_archive_interop import need
from tests.registry.fixtures import client_for
from tests.registry.kit import FaultProxy, Registry

pytestmark = pytest.mark.integration


def skopeo_push(source: str, registry: Registry, name: str) -> None:
    """`skopeo copy SOURCE docker://HOST/NAME` (every platform of an index), logged in as the registry's user."""
    args = [need("skopeo"), "copy", "--all", "--dest-tls-verify=false"]
    if registry.kind != "plain":
        args += ["--dest-creds", f"{registry.user}:{registry.password}"]
    done = subprocess.run([*args, source, f"docker://{registry.host}/{name}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def push_index(registry: Registry, tmp_path: Path, name: str, seed: int = 1, *, docker: bool = False) -> kit.MemoryIndex:
    index = kit.random_index(random.Random(seed), docker=docker)
    layout = tmp_path / f"layout-{seed}"
    OciLayoutWriter(layout, directory=True).write_index(index, ["kit:multi"])
    skopeo_push(f"oci:{layout}:multi", registry, name)
    return index



def login_for(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    auth = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    if registry.certs_dir is not None:
        monkeypatch.setenv("LAYERBUILD_CERTS_DIRS", str(registry.certs_dir))


def test_pull_a_multi_platform_index(plain_registry: Registry, tmp_path: Path, cli_env: None,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    index = push_index(plain_registry, tmp_path, "kit/multi:1")
    root = tmp_path / "store"
    name = f"{plain_registry.host}/kit/multi"
    code, out, err = lb(root, capfd, "pull", "--progress", "plain", f"{name}:1")
    assert code == 0, err
    amd64 = index.images[0][0]
    lines = out.splitlines()
    assert lines[0] == f"1: Pulling from {name}"
    for layer in amd64.layers:
        assert f"{layer.digest[7:19]}: Pull complete" in lines
    assert f"Digest: {index.digest}" in lines  # skopeo kept the index as it was
    assert f"Status: Downloaded newer image for {name}:1" in lines
    assert lines[-1] == f"{name}:1"
    with Store.open(root) as store:
        tag = store.index.get_tag(f"{name}:1")
        assert tag is not None
        from layerbuild.image.store_io import load_image

        stored = load_image(store, tag.digest)
        assert stored.config_digest == amd64.config_descriptor.digest  # the config's bytes, as pushed
        assert stored.config.diff_ids == amd64.config.diff_ids

    # Up to date: the index's digest is what was pulled, so nothing else is asked for.
    code, out, _ = lb(root, capfd, "pull", f"{name}:1")
    assert code == 0 and f"Status: Image is up to date for {name}:1" in out
    assert "Pull complete" not in out

    # arm64 is the index's arm64/v8; the shared first layer is not downloaded again.
    code, out, err = lb(root, capfd, "pull", "--platform", "linux/arm64", "--progress", "plain", f"{name}:1")
    assert code == 0, err
    arm64 = index.images[1][0]
    assert f"{arm64.layers[0].digest[7:19]}: Already exists" in out
    assert f"{arm64.layers[1].digest[7:19]}: Pull complete" in out
    code, out, _ = lb(root, capfd, "inspect", f"{name}:1")
    assert json.loads(out)["architecture"] == "arm64"
    with Store.open(root) as store:
        arm_tag = store.index.get_tag(f"{name}:1")

    # No arm/v6 in the index (only v7, which v6 cannot run): refused, naming what there is; no tag moved.
    code, _, err = lb(root, capfd, "pull", "--platform", "linux/arm/v6", f"{name}:1")
    assert code == 1 and "no image for platform linux/arm/v6" in err and "linux/arm/v7" in err
    with Store.open(root) as store:
        assert store.index.get_tag(f"{name}:1") == arm_tag
    code, out, _ = lb(root, capfd, "images", "--digests")
    row = next(line for line in out.splitlines() if line.startswith(name))
    assert index.digest in row.split()

    # -q prints the name only; JSON events end with pull.finished.
    code, out, _ = lb(root, capfd, "pull", "-q", "--platform", "linux/arm64", f"{name}:1")
    assert (code, out) == (0, f"{name}:1\n")
    code, out, _ = lb(root, capfd, "pull", "--progress", "json", f"{name}:1")
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0] == {"event": "pull.resolved", "digest": index.digest}
    assert events[-1]["event"] == "pull.finished"
    assert fsck_problems(root) == []


def test_arm_variants_choose_as_containerd(plain_registry: Registry, tmp_path: Path) -> None:
    """An index of arm/v5 and arm/v6 only: arm/v7 takes v6 (the best it runs), arm64 takes v6 too
    (arm64 runs 32-bit arm), arm/v5 takes v5."""
    from layerbuild.image.protocol import Platform

    plats = (Platform("linux", "arm", "v5"), Platform("linux", "arm", "v6"))
    index = kit.random_index(random.Random(5), platforms=plats)
    layout = tmp_path / "layout"
    OciLayoutWriter(layout, directory=True).write_index(index, ["kit:arm"])
    skopeo_push(f"oci:{layout}:arm", plain_registry, "kit/arm:1")
    ref = parse_reference(f"{plain_registry.host}/kit/arm:1")
    with client_for(plain_registry) as client, Store.open(tmp_path / "store") as store:
        for want, chosen in ((("linux", "arm", "v7"), 1), (("linux", "arm64", ""), 1), (("linux", "arm", "v5"), 0)):
            result = pull(store, ref, client=client, platform=want)
            assert load_image(store, result.manifest).config_digest == index.images[chosen][0].config_descriptor.digest, want


def test_pull_a_docker_archive_pushed_by_skopeo_then_build_and_run(plain_registry: Registry, tmp_path: Path,
                                                                   cli_env: None,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """A busybox image saved as a docker archive, pushed by skopeo (Docker schema 2, gzip layers): a
    build FROM it on a fresh store pulls it, RUNs in it, and `run` runs the result."""
    with busybox_root("lb-pull-") as source:
        archive = tmp_path / "busybox.tar"
        assert lb(source, capfd, "save", "busybox", "-o", str(archive))[0] == 0
    skopeo_push(f"docker-archive:{archive}", plain_registry, "tools/busybox:1")
    base = f"{plain_registry.host}/tools/busybox:1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN echo pulled > /greeting\n")
    root = tmp_path / "fresh"
    code, _, err = lb(root, capfd, "build", "--progress", "plain", "-t", "app:1", str(ctx))
    assert code == 0, err
    assert f"pulled {base}" in err
    code, out, err = lb(root, capfd, "run", "--rm", "app:1", "cat", "/greeting")
    assert (code, out) == (0, "pulled\n"), err
    # `busybox`-style short names: the pulled image answers to the name it was pulled by.
    code, out, _ = lb(root, capfd, "images")
    assert base.rsplit(":", 1)[0] in out
    assert fsck_problems(root) == []


def test_blobs_are_kept_as_the_registry_sent_them(plain_registry: Registry, tmp_path: Path, cli_env: None,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """gzip, zstd and plain layers are stored as the very blobs the registry holds (no recompression,
    though each was unpacked and checked against its config's diff_id), so a push of the pulled image
    to another repository sends layers with the digests the first one had, as containerd's pull does;
    a build FROM it unpacks them."""
    image = kit.random_image(random.Random(5), layers=3)  # gzip, zstd, plain
    layout = tmp_path / "layout-kept"
    OciLayoutWriter(layout, directory=True).write(image, ["kit:kept"])
    skopeo_push(f"oci:{layout}:kept", plain_registry, "kit/kept:1")
    name = f"{plain_registry.host}/kit/kept:1"
    with client_for(plain_registry) as client:
        held = json.loads(client.get_manifest(parse_reference(name)).data)["layers"]
        blobs = [client.get_blob(parse_reference(name), d["digest"]) for d in held]
    # skopeo gzips a plain layer on its way to a registry; the other two stay as they were.
    assert [d["mediaType"].rpartition(".")[2] for d in held] == ["tar+gzip", "tar+zstd", "tar+gzip"]
    root = tmp_path / "store"
    assert lb(root, capfd, "pull", "-q", name)[0] == 0
    with Store.open(root) as store:
        tag = store.index.get_tag(name)
        assert tag is not None
        stored = load_image(store, tag.digest)
        assert [(r.digest, r.size, r.media_type) for r in stored.layers] == [
            (d["digest"], d["size"], d["mediaType"]) for d in held]
        assert [r.diff_id for r in stored.layers] == [la.diff_id for la in image.layers]
        assert [store.blobs.read(r.digest) for r in stored.layers] == blobs
    again = f"{plain_registry.host}/kit/again:1"
    assert lb(root, capfd, "tag", name, again)[0] == 0
    code, _, err = lb(root, capfd, "push", "-q", "--format", "oci", again)
    assert code == 0, err
    with client_for(plain_registry) as client:
        pushed = json.loads(client.get_manifest(parse_reference(again)).data)["layers"]
    # push sends gzip: the two gzip blobs go as they came; the zstd one is gzipped for it.
    assert [d["digest"] for d in pushed][::2] == [held[0]["digest"], held[2]["digest"]]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {name}\nCOPY --from={name} / /copied/\n")
    code, _, err = lb(root, capfd, "build", "-q", "-t", "kept:built", str(ctx))
    assert code == 0, err
    assert fsck_problems(root) == []


@pytest.mark.parametrize("kind", ["htpasswd", "token"])
def test_pull_from_tls_and_token_registries(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                                            cli_env: None, monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    registry: Registry = request.getfixturevalue({"htpasswd": "tls_registry", "token": "token_registry"}[kind])
    index = push_index(registry, tmp_path, f"kit/auth-{kind}:1", seed=7)
    root = tmp_path / "store"
    name = f"{registry.host}/kit/auth-{kind}:1"
    code, _, err = lb(root, capfd, "pull", name)
    if registry.certs_dir is not None:  # first the CA is unknown: said so, with where to put it
        assert code == 1 and "certs.d" in err
        monkeypatch.setenv("LAYERBUILD_CERTS_DIRS", str(registry.certs_dir))
        code, _, err = lb(root, capfd, "pull", name)
    assert code == 1 and "login" in err  # anonymous: refused, with the hint to log in
    login_for(registry, tmp_path, monkeypatch)
    code, out, err = lb(root, capfd, "pull", name)
    assert code == 0, err
    assert "Status: Downloaded newer image" in out and f"Digest: {index.digest}" in out
    with Store.open(root) as store:
        assert store.index.get_tag(name) is not None
    assert registry.password not in out + err


@pytest.fixture
def proxied(plain_registry: Registry) -> Iterator[tuple[Registry, FaultProxy]]:
    proxy = FaultProxy(plain_registry)
    yield plain_registry, proxy
    proxy.close()


def _blob_rule(digest: str, action: tuple[object, ...]) -> object:
    def rule(method: str, path: str, headers: dict[str, str]) -> tuple[object, ...] | None:
        return action if method == "GET" and path.endswith(f"/blobs/{digest}") else None

    return rule


def test_a_bad_blob_is_read_again_or_fails_cleanly(proxied: tuple[Registry, FaultProxy], tmp_path: Path) -> None:
    from tests.registry.kit import once

    registry, proxy = proxied
    index = push_index(registry, tmp_path, "kit/faults:1", seed=11)
    image = index.images[0][0]
    layer = image.layers[1]
    ref = parse_reference(f"{proxy.host}/kit/faults:1")
    flipped = ("alter", lambda data: data[:-1] + bytes([data[-1] ^ 1]))
    root = tmp_path / "store"
    with client_for(registry, host=proxy.host) as client, Store.open(root) as store:
        # Once wrong, once cut short: read again, to an intact image.
        proxy.rules = [once(1, _blob_rule(layer.digest, flipped)),  # type: ignore[list-item]
                       once(1, _blob_rule(image.layers[0].digest, ("cut", 100)))]  # type: ignore[list-item]
        seen: list[PullEvent] = []
        result = pull(store, ref, client=client, on_event=seen.append)
        assert load_image(store, result.manifest).config.diff_ids == image.config.diff_ids
        assert any(e.status == "retrying" and e.layer == layer.digest[7:19] for e in seen)
        # Always truncated (the registry says the short length): a clean failure under another tag;
        # the first tag has not moved, and nothing of the bad layer is recorded.
        before = store.index.get_tag(f"{proxy.host}/kit/faults:1")
        other = push_index(registry, tmp_path, "kit/faults:2", seed=12)
        bad = other.images[0][0].layers[1]
        proxy.rules = [_blob_rule(bad.digest, ("alter", lambda data: data[: len(data) // 2]))]  # type: ignore[list-item]
        from layerbuild.errors import DigestMismatchError

        with pytest.raises(DigestMismatchError):
            pull(store, parse_reference(f"{proxy.host}/kit/faults:2"), client=client)
        assert store.index.get_tag(f"{proxy.host}/kit/faults:2") is None
        assert store.index.get_tag(f"{proxy.host}/kit/faults:1") == before
        assert not any(layer.diff_id == bad.diff_id for layer in store.index.list_layers())
    assert fsck_problems(root) == []


def test_a_blob_of_other_bytes_but_the_same_tar_is_refused(proxied: tuple[Registry, FaultProxy],
                                                            tmp_path: Path) -> None:
    """The registry sends a gzip layer of the same length that unpacks to the same tar (its header's
    mtime changed): only the blob's digest tells, and it is checked though the bytes are hashed once."""
    from layerbuild.errors import DigestMismatchError

    registry, proxy = proxied
    seed = next(n for n in range(20, 100) if any(la.media_type.endswith("gzip")
                                                  for la in kit.random_index(random.Random(n)).images[0][0].layers))
    name = f"kit/regz:{seed}"
    image = push_index(registry, tmp_path, name, seed=seed).images[0][0]
    layer = next(la for la in image.layers if la.media_type.endswith("gzip"))
    assert layer.blob[4:8] == bytes(4)  # gzip's mtime, 0 as the kit writes it
    proxy.rules = [_blob_rule(layer.digest, ("alter", lambda data: data[:4] + b"\1\0\0\0" + data[8:]))]  # type: ignore[list-item]
    root = tmp_path / "store"
    with client_for(registry, host=proxy.host) as client, Store.open(root) as store:
        with pytest.raises(DigestMismatchError, match="hashes to"):
            pull(store, parse_reference(f"{proxy.host}/{name}"), client=client)
        assert not any(la.diff_id == layer.diff_id for la in store.index.list_layers())
        assert store.index.get_tag(f"{proxy.host}/{name}") is None
    assert fsck_problems(root) == []


def test_a_pinned_digest_is_verified(proxied: tuple[Registry, FaultProxy], tmp_path: Path, cli_env: None,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    registry, proxy = proxied
    index = push_index(registry, tmp_path, "kit/pinned:1", seed=13)
    root = tmp_path / "store"
    pinned = f"{proxy.host}/kit/pinned@{index.digest}"
    code, out, err = lb(root, capfd, "pull", pinned)
    assert code == 0, err
    assert out.splitlines()[-1] == pinned
    # What was pulled by digest answers to NAME@DIGEST (the registry's digest, not the store's own).
    code, out, err = lb(root, capfd, "inspect", pinned)
    assert code == 0, err
    # The registry (or something between) sends other bytes for the pinned digest: refused.
    other = f"{proxy.host}/kit/pinned@{index.images[1][0].digest}"
    proxy.rules = [lambda m, p, h: ("alter", lambda d: d.replace(b'"layers"', b'"layers" '))  # type: ignore[list-item]
                   if "/manifests/sha256:" in p else None]
    code, _, err = lb(root, capfd, "pull", other)
    assert code == 1 and "hashes to" in err and "Traceback" not in err
    assert fsck_problems(root) == []


def test_build_pull_refreshes_a_moved_tag(plain_registry: Registry, tmp_path: Path, cli_env: None,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    """`build` uses the stored base until `--pull` finds the tag moved upstream; then the steps after
    FROM miss, naming the new base, and a second `--pull` build is all hits."""
    with busybox_root("lb-pull-") as source:
        ctx0 = tmp_path / "ctx0"
        ctx0.mkdir()
        (ctx0 / "Dockerfile").write_text("FROM busybox\nRUN echo 2 > /version\n")
        assert lb(source, capfd, "build", "-t", "busybox:2", str(ctx0))[0] == 0
        one, two = tmp_path / "one.tar", tmp_path / "two.tar"
        assert lb(source, capfd, "save", "busybox", "-o", str(one))[0] == 0
        assert lb(source, capfd, "save", "busybox:2", "-o", str(two))[0] == 0
    skopeo_push(f"docker-archive:{one}", plain_registry, "tools/moving:1")
    base = f"{plain_registry.host}/tools/moving:1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN (cat /version 2>/dev/null || echo none) > /seen\n")
    root = tmp_path / "store"
    assert lb(root, capfd, "build", "--progress", "plain", "-t", "app", str(ctx))[0] == 0
    skopeo_push(f"docker-archive:{two}", plain_registry, "tools/moving:1")  # the tag moves upstream
    code, _, err = lb(root, capfd, "build", "--progress", "plain", "-t", "app", str(ctx))
    assert code == 0 and "RUN" in err and "CACHED" in err  # without --pull: the stored base, all cached
    code, _, err = lb(root, capfd, "build", "--progress", "plain", "--pull", "-t", "app", str(ctx))
    assert code == 0, err
    assert f"pulled {base}" in err and "base image" in err  # the miss names the new base
    code, out, _ = lb(root, capfd, "run", "--rm", "app", "cat", "/seen")
    assert out == "2\n"
    code, _, err = lb(root, capfd, "build", "--progress", "plain", "--pull", "-t", "app", str(ctx))
    assert code == 0 and f"up to date: {base}" in err and "CACHED" in err
    assert fsck_problems(root) == []


def test_build_platform_rules(plain_registry: Registry, tmp_path: Path, cli_env: None,
                              capfd: pytest.CaptureFixture[str]) -> None:
    """`FROM --platform` picks from an index; a RUN for a platform this machine cannot run is refused
    at its line; a stage without RUN may be for any platform."""
    from layerbuild.platforms import host_platform

    index = push_index(plain_registry, tmp_path, "kit/plat:1", seed=17)
    host = host_platform()
    foreign = "linux/arm64" if host[1] != "arm64" else "linux/amd64"
    base = f"{plain_registry.host}/kit/plat:1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM --platform={foreign} {base}\nRUN true\n")
    root = tmp_path / "store"
    code, _, err = lb(root, capfd, "build", str(ctx))
    assert code == 2 and "Dockerfile:2" in err and "cannot run" in err
    (ctx / "Dockerfile").write_text(f"FROM --platform={foreign} {base}\nLABEL x=1\n")
    code, _, err = lb(root, capfd, "build", "-t", "foreign", str(ctx))
    assert code == 0, err
    chosen = index.images[1 if foreign == "linux/arm64" else 0][0]
    with Store.open(root) as store:
        from layerbuild.image.store_io import resolve_image

        assert resolve_image(store, "foreign").config.diff_ids == chosen.config.diff_ids
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")
    code, _, err = lb(root, capfd, "build", "--platform", "linux/s390x", "-t", "x", str(ctx))
    assert code != 0 and "linux/s390x" in err and "Traceback" not in err


def test_pull_what_podman_pushed_then_build_and_run(plain_registry: Registry, tmp_path: Path, cli_env: None,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    """podman (its own storage in the test's directory) imports a busybox rootfs and pushes it as an OCI
    image; a build FROM it on a fresh store pulls it and runs a step in it, and `run` runs the result."""
    import shutil
    import tempfile

    from tests.runtime.conftest import busybox_tar

    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_tar())
    runroot = tempfile.mkdtemp(prefix="lbpm-")  # podman wants a runroot path of at most 50 characters
    podman = [need("podman"), "--root", str(tmp_path / "podman-root"), "--runroot", runroot,
              "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    name = f"{plain_registry.host}/tools/podman-busybox:1"
    try:
        for args in (["import", "--change", "CMD [\"/bin/sh\"]", str(rootfs), name],
                     ["push", "--tls-verify=false", "--format", "oci", name]):
            done = subprocess.run([*podman, *args], capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {name}\nRUN echo from-podman > /made\n")
    root = tmp_path / "fresh"
    code, _, err = lb(root, capfd, "build", "--progress", "plain", "-t", "podapp", str(ctx))
    assert code == 0, err
    code, out, err = lb(root, capfd, "run", "--rm", "podapp", "cat", "/made")
    assert (code, out) == (0, "from-podman\n"), err
    assert fsck_problems(root) == []
