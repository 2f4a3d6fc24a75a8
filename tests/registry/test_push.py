"""`layerbuild push` and `build --push` against the real registries: what is written validates against
the schemas and is what skopeo, podman and containerd accept and run; blobs that exist are skipped,
blobs seen in another repository are mounted, cut uploads are retried, refusals are clean errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.image import resolve_image
from layerbuild.reference import parse_reference
from layerbuild.store import Store
from tests.conftest import BUSYBOX_BASE, busybox_binary
from tests.image.schemas import validate
from tests.registry.fixtures import client_for
from tests.registry.kit import FaultProxy, Registry, once

pytestmark = pytest.mark.integration

DOCKERFILE = BUSYBOX_BASE + """\
FROM base
COPY hello.txt /hello.txt
RUN echo built > /built.txt
CMD ["/bin/cat", "/hello.txt"]
"""
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def build_image(tmp_path: Path, tag: str, text: str = "hello from a pushed image\n") -> Path:
    """The busybox sample's shape built into a store at tmp_path/store, tagged `tag`; the store root."""
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    shutil.copy(busybox_binary(), ctx / "busybox")
    (ctx / "hello.txt").write_text(text)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    root = tmp_path / "store"
    layerbuild.build(ctx, tags=[tag], root=root)
    return root


def outcomes(out: str) -> list[str]:
    """A push's lines past its first and before its last, without docker's Preparing/Waiting lines."""
    return [line for line in out.splitlines()[1:-1] if not line.endswith((": Preparing", ": Waiting"))]


def lb(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def remote(registry: Registry, name: str, accept: str | None = None) -> tuple[dict, bytes, dict]:  # type: ignore[type-arg]
    """The manifest (parsed and raw) and config of `name` as the registry serves them, each validated."""
    ref = parse_reference(name)
    with client_for(registry) as client:
        got = client.get_manifest(ref) if accept is None else client.get_manifest(ref, accept=[accept])
        manifest = json.loads(got.data)
        validate(got.data, got.media_type)
        config_raw = client.get_blob(ref, manifest["config"]["digest"])
        validate(config_raw, manifest["config"]["mediaType"])
    return manifest, got.data, json.loads(config_raw)


def test_push_then_skopeo_inspects_and_copies_it(plain_registry: Registry, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    name = f"{plain_registry.host}/push/app:1"
    root = build_image(tmp_path, name)
    code, out, err = lb(capfd, "--root", str(root), "push", name)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"The push refers to repository [{plain_registry.host}/push/app]"
    with Store(root) as store:
        stored = resolve_image(store, name)
        diff_ids = stored.config.diff_ids
        assert {line.split(":")[0] for line in outcomes(out)} == {d[7:19] for d in diff_ids}
        assert all(line.endswith(": Pushed") for line in outcomes(out))
        assert sum(line.endswith(": Preparing") for line in lines) == len(diff_ids)  # as docker's, in a log
        manifest, raw, config = remote(plain_registry, name)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        assert lines[-1] == f"1: digest: {digest} size: {len(raw)}"
        # docker's types, gzip layers, the same diff_ids and so the same image id
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
        assert [la["mediaType"] for la in manifest["layers"]] == [DOCKER_LAYER] * len(diff_ids)
        assert config["rootfs"]["diff_ids"] == list(diff_ids)
        assert manifest["config"]["digest"] == stored.id
        assert store.index.repo_digests_of(stored.manifest_digest) == ((f"{plain_registry.host}/push/app", digest),)
    with client_for(plain_registry) as client:
        blob = client.get_blob(parse_reference(name), manifest["layers"][-1]["digest"])
    assert hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_ids[-1][7:]

    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{name}"],
                             capture_output=True, text=True, check=True)
    assert json.loads(inspect.stdout)["Digest"] == digest
    dest = tmp_path / "copied"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{dest}:app"],
                   capture_output=True, check=True)
    index = json.loads((dest / "index.json").read_text())
    copied = json.loads((dest / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    assert [la["digest"] for la in copied["layers"]] == [la["digest"] for la in manifest["layers"]]


def test_a_push_of_what_exists_sends_no_blob(plain_registry: Registry, tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    name = f"{plain_registry.host}/push/again:1"
    root = build_image(tmp_path, name)
    assert lb(capfd, "--root", str(root), "push", name)[0] == 0
    proxy = FaultProxy(plain_registry)
    try:
        via = name.replace(plain_registry.host, proxy.host)
        assert lb(capfd, "--root", str(root), "tag", name, via)[0] == 0
        started = time.monotonic()
        code, out, err = lb(capfd, "--root", str(root), "push", via)
        took = time.monotonic() - started
    finally:
        proxy.close()
    assert code == 0, err
    assert all(line.endswith(": Layer already exists") for line in outcomes(out)), out
    methods = sorted({(s.method, s.path.split("/")[-2]) for s in proxy.seen if s.path != "/v2/"})
    assert methods == [("HEAD", "blobs"), ("PUT", "manifests")], methods  # no upload at all
    print(f"push with every blob present: {took:.3f}s (in-process)")


def test_a_push_in_its_own_process_loads_only_what_a_push_uses(plain_registry: Registry, tmp_path: Path,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    """No thread pool of concurrent.futures (nor the logging it imports), no zstd codec, no
    subprocess (credential helpers), no pruning: a push whose blobs exist is its imports, mostly."""
    import sys

    name = f"{plain_registry.host}/push/lean:1"
    root = build_image(tmp_path, name)
    assert lb(capfd, "--root", str(root), "push", name)[0] == 0  # sends the blobs (and makes their gzip form)
    code = (f"import sys; from layerbuild.cli.main import main; "
            f"assert main(['--root', {str(root)!r}, 'push', '-q', {name!r}]) == 0; "
            "heavy = [m for m in ('concurrent.futures', 'logging', 'zstandard', 'subprocess', "
            "'layerbuild.store.maintenance', 'layerbuild.layer.ingest') if m in sys.modules]; "
            "print(','.join(heavy), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "", f"loaded by a push whose blobs exist: {done.stderr}"
    assert remote(plain_registry, name)[0]["layers"]


def test_a_blob_seen_in_another_repository_is_mounted(plain_registry: Registry, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    proxy = FaultProxy(plain_registry)
    try:
        first, second = f"{proxy.host}/mount/source:1", f"{proxy.host}/mount/target:2"
        root = build_image(tmp_path, first)
        assert lb(capfd, "--root", str(root), "push", first)[0] == 0
        with Store(root) as store:  # the store now knows which repository holds the blobs
            manifest, _, _ = remote(plain_registry, first.replace(proxy.host, plain_registry.host))
            for layer in manifest["layers"]:
                assert store.index.blob_repos(layer["digest"]) == (f"{proxy.host}/mount/source",)
        assert lb(capfd, "--root", str(root), "tag", first, second)[0] == 0
        proxy.seen.clear()
        code, out, err = lb(capfd, "--root", str(root), "push", second)
    finally:
        proxy.close()
    assert code == 0, err
    lines = outcomes(out)
    assert lines and all(line.endswith(": Mounted from mount/source") for line in lines), out
    mounts = [s for s in proxy.seen if s.method == "POST" and "mount=" in s.path]
    assert len(mounts) == len(manifest["layers"])
    assert not [s for s in proxy.seen if s.method in ("PATCH", "PUT") and "/blobs/uploads/" in s.path
                and int(s.headers.get("Content-Length") or 0) > 2000]  # no layer was sent again
    assert remote(plain_registry, second.replace(proxy.host, plain_registry.host))[0] == manifest


def test_uploads_run_side_by_side_but_at_most_five_at_once(plain_registry: Registry, tmp_path: Path,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n" + "".join(f"COPY f{i} /f{i}\n" for i in range(8)))
    for i in range(8):
        (ctx / f"f{i}").write_bytes(os.urandom(20000))
    proxy = FaultProxy(plain_registry)
    import threading

    lock = threading.Lock()
    now, most, seen = [0], [0], [0]

    def slow(method: str, path: str, headers: dict[str, str]) -> None:
        if method == "PUT" and "/blobs/uploads/" in path and int(headers.get("Content-Length") or 0) > 10000:
            with lock:
                now[0] += 1
                seen[0] += 1
                most[0] = max(most[0], now[0])
            time.sleep(0.5)  # each upload takes a while, so the ones in flight meet here
            with lock:
                now[0] -= 1
        return None

    try:
        name = f"{proxy.host}/flight/app:1"
        root = tmp_path / "store"
        layerbuild.build(ctx, tags=[name], root=root)
        proxy.rules.append(slow)
        code, _, err = lb(capfd, "--root", str(root), "push", name)
    finally:
        proxy.close()
    assert code == 0, err
    assert seen[0] == 8
    assert 2 <= most[0] <= 5, most[0]  # side by side, never more than docker's five


def test_oci_format_and_zstd(plain_registry: Registry, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    name = f"{plain_registry.host}/push/oci:1"
    root = build_image(tmp_path, name)
    assert lb(capfd, "--root", str(root), "push", "-q", "--format", "oci", name)[:2] == (0, name + "\n")  # as docker -q
    manifest, _, _ = remote(plain_registry, name)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert {la["mediaType"] for la in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}

    zname = f"{plain_registry.host}/push/zstd:1"
    assert lb(capfd, "--root", str(root), "tag", name, zname)[0] == 0
    code, out, err = lb(capfd, "--root", str(root), "push", "--compression", "zstd", "--progress", "json", zname)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["aux"]["Tag"] == "1" and events[-1]["aux"]["Digest"].startswith("sha256:")
    assert {e["status"] for e in events if "id" in e} >= {"Preparing", "Pushed"}
    manifest, _, config = remote(plain_registry, zname)
    assert {la["mediaType"] for la in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    with Store(root) as store:
        assert config["rootfs"]["diff_ids"] == list(resolve_image(store, name).config.diff_ids)
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{zname}"],
                             capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stderr

    code, _, err = lb(capfd, "--root", str(root), "push", "--format", "docker", "--compression", "zstd", zname)
    assert code == 2 and "no zstd layers" in err and "--format oci" in err and "Traceback" not in err


def test_an_image_the_store_lacks(plain_registry: Registry, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = lb(capfd, "--root", str(tmp_path / "empty"), "push", f"{plain_registry.host}/no/such:1")
    assert code == 2 and "does not exist locally" in err and "Traceback" not in err


# --- peers run what was pushed ---------------------------------------------------------------------


def test_podman_pulls_and_runs_it(plain_registry: Registry, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup --test installs it)")
    if os.geteuid() != 0:
        pytest.skip("the podman test runs podman as root, with a storage of its own")
    name = f"{plain_registry.host}/peers/podman:1"
    root = build_image(tmp_path, name, "hello, podman\n")
    assert lb(capfd, "--root", str(root), "push", name)[0] == 0
    pod = tmp_path / "podman"
    runroot = Path(tempfile.mkdtemp(prefix="lb-pod-"))  # podman wants a runroot under 50 characters
    base = ["podman", "--root", str(pod / "root"), "--runroot", str(runroot), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", str(pod / "tmp")]
    try:
        pulled = subprocess.run([*base, "pull", "--tls-verify=false", name], capture_output=True, text=True)
        assert pulled.returncode == 0, pulled.stderr
        # runc, and limits no higher than ours: podman's defaults need CAP_SYS_RESOURCE, which a CI
        # container may lack
        ran = subprocess.run([*base, "run", "--rm", "--network", "none", "--runtime", "runc",
                              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", name],
                             capture_output=True, text=True, timeout=120)
        if ran.returncode != 0 and "OCI runtime" in ran.stderr:
            pytest.skip(f"podman pulled the image but cannot run containers here: {ran.stderr.strip()[:200]}")
        assert (ran.returncode, ran.stdout) == (0, "hello, podman\n"), ran.stderr
        built = subprocess.run([*base, "run", "--rm", "--network", "none", "--runtime", "runc", "--ulimit",
                                "nofile=1024:1024", "--ulimit", "nproc=4096:4096", name, "/bin/cat", "/built.txt"],
                               capture_output=True, text=True, timeout=120)
        assert built.stdout == "built\n", built.stderr
    finally:
        subprocess.run([*base, "rmi", "-af"], capture_output=True)
        subprocess.run(["umount", "-R", str(pod / "root")], capture_output=True)
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A containerd of the test's own: config, root, state and socket under tmp_path (a shorter
    temp dir when that path is too long for a socket); (socket, dir)."""
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (scripts/setup --test installs it)")
    if os.geteuid() != 0:
        pytest.skip("containerd runs as root")
    where = tmp_path / "ctd"
    short = None
    if len(str(where / "c.sock.ttrpc")) > 100:
        short = Path(tempfile.mkdtemp(prefix="lb-ctd-"))
        where = short
    where.mkdir(exist_ok=True)
    sock = where / "c.sock"
    config = where / "config.toml"
    config.write_text(f'version = 2\nroot = "{where / "root"}"\nstate = "{where / "state"}"\n'
                      'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                      f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
                      f'[debug]\n  address = "{where / "debug.sock"}"\n')
    log = open(where / "containerd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ctr", "-a", str(sock), "version"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not start: {(where / 'containerd.log').read_text()[-1500:]}")
            time.sleep(0.1)
        yield str(sock), where
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(where / "root")], capture_output=True)
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


def test_containerd_pulls_and_runs_it(plain_registry: Registry, tmp_path: Path, containerd: tuple[str, Path],
                                      capfd: pytest.CaptureFixture[str]) -> None:
    sock, _ = containerd
    name = f"{plain_registry.host}/peers/containerd:1"
    root = build_image(tmp_path, name, "hello, containerd\n")
    assert lb(capfd, "--root", str(root), "push", name)[0] == 0
    ctr = ["ctr", "-a", sock, "-n", "layerbuild-test"]
    pulled = subprocess.run([*ctr, "image", "pull", "--plain-http", name], capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    ran = subprocess.run([*ctr, "run", "--rm", name, "t1"], capture_output=True, text=True, timeout=120)
    assert (ran.returncode, ran.stdout) == (0, "hello, containerd\n"), ran.stderr


# --- faults and refusals ------------------------------------------------------------------------------


def test_an_upload_cut_midway_is_retried_to_an_intact_image(plain_registry: Registry, tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    proxy = FaultProxy(plain_registry)
    try:
        name = f"{proxy.host}/faults/cut:1"
        root = build_image(tmp_path, name)
        # the first two blob uploads are cut after 1000 bytes of their body
        proxy.rules.append(once(2, lambda m, p, h: ("cut_request", 1000)
                                if m == "PUT" and "/blobs/uploads/" in p and int(h.get("Content-Length") or 0) > 2000
                                else None))
        code, _, err = lb(capfd, "--root", str(root), "push", name)
    finally:
        proxy.close()
    assert code == 0, err
    manifest, _, config = remote(plain_registry, f"{plain_registry.host}/faults/cut:1")
    big = [s for s in proxy.seen if s.method == "PUT" and "/blobs/uploads/" in s.path
           and int(s.headers.get("Content-Length") or 0) > 2000]
    assert len(big) == sum(1 for la in manifest["layers"] if la["size"] > 2000) + 2  # the cut ones, sent again
    with client_for(plain_registry) as client:
        for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
            blob = client.get_blob(parse_reference(f"{plain_registry.host}/faults/cut"), layer["digest"])
            assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_id


def test_a_registry_that_refuses_monolithic_uploads_gets_chunks(plain_registry: Registry, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    proxy = FaultProxy(plain_registry)
    try:
        name = f"{proxy.host}/faults/chunked:1"
        root = build_image(tmp_path, name)
        refusal = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": "use chunks"}]}).encode()
        proxy.rules.append(lambda m, p, h: ("status", 413, {"Content-Type": "application/json"}, refusal)
                           if m == "PUT" and "/blobs/uploads/" in p and int(h.get("Content-Length") or 0) > 0
                           else None)
        code, _, err = lb(capfd, "--root", str(root), "push", name)
    finally:
        proxy.close()
    assert code == 0, err
    assert [s for s in proxy.seen if s.method == "PATCH"]
    manifest, _, config = remote(plain_registry, f"{plain_registry.host}/faults/chunked:1")
    with client_for(plain_registry) as client:
        for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
            blob = client.get_blob(parse_reference(f"{plain_registry.host}/faults/chunked"), layer["digest"])
            assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_id


@pytest.mark.store_corrupted
def test_a_damaged_blob_in_the_store_is_not_pushed(plain_registry: Registry, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from layerbuild.image.storeimage import store_image

    name = f"{plain_registry.host}/faults/damaged:1"
    root = build_image(tmp_path, name, "a blob to damage\n")
    with Store(root) as store:
        layer = store_image(store, resolve_image(store, name), compression="gzip").layers[0]  # its gzip variant
        path = root / "blobs" / "sha256" / layer.digest[7:]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.chmod(0o644)
        path.write_bytes(bytes(data))
    code, _, err = lb(capfd, "--root", str(root), "push", name)
    assert code == 1 and "is corrupt" in err and "layerbuild fsck" in err and "Traceback" not in err
    with client_for(plain_registry) as client:
        ref = parse_reference(name)
        assert client.head_manifest(ref) is None  # no tag
        stored = client.stat_blob(ref, layer.digest)
        assert stored is None  # the registry kept nothing of it under that digest


@pytest.mark.parametrize(("code_name", "status", "words"), [
    ("DENIED", 403, "denied"),
    ("UNAUTHORIZED", 401, "layerbuild login"),
])
def test_a_registry_that_refuses(plain_registry: Registry, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                 code_name: str, status: int, words: str) -> None:
    proxy = FaultProxy(plain_registry)
    try:
        name = f"{proxy.host}/faults/refused:1"
        root = build_image(tmp_path, name)
        body = json.dumps({"errors": [{"code": code_name, "message": "requested access to the resource is denied"}]})
        proxy.rules.append(lambda m, p, h: ("status", status, {"Content-Type": "application/json"}, body.encode())
                           if m in ("POST", "PUT") else None)
        code, out, err = lb(capfd, "--root", str(root), "push", name)
    finally:
        proxy.close()
    assert code == 1, (out, err)
    assert words in err.lower() if words == "denied" else words in err
    assert "Traceback" not in err and "internal error" not in err
    with client_for(plain_registry) as client:  # no tag was made
        assert client.head_manifest(parse_reference(f"{plain_registry.host}/faults/refused:1")) is None


@pytest.mark.parametrize("kind", ["tls_registry", "token_registry"])
def test_push_with_credentials_from_login(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    registry: Registry = request.getfixturevalue(kind)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    if registry.certs_dir is not None:
        monkeypatch.setenv("LAYERBUILD_CERTS_DIRS", str(registry.certs_dir))
    name = f"{registry.host}/auth/app:1"
    root = build_image(tmp_path, name)
    code, _, err = lb(capfd, "--root", str(root), "push", name)
    assert code == 1 and "layerbuild login" in err and "Traceback" not in err  # not logged in yet
    monkeypatch.setattr("sys.stdin", io.StringIO(registry.password + "\n"))
    assert lb(capfd, "login", "-u", registry.user, "--password-stdin", registry.host)[0] == 0
    code, out, err = lb(capfd, "--root", str(root), "push", name)
    assert code == 0, err
    assert registry.password not in out + err
    manifest, _, _ = remote(registry, name)
    assert len(manifest["layers"]) == 4  # busybox, its links, hello.txt, built.txt


# --- build --push and --output type=registry ----------------------------------------------------------


def test_build_push_and_output_registry(plain_registry: Registry, tmp_path: Path,
                                        capfd: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy(busybox_binary(), ctx / "busybox")
    (ctx / "hello.txt").write_text("built and pushed\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    root = str(tmp_path / "store")
    host = plain_registry.host
    code, _, err = lb(capfd, "--root", root, "build", "--progress", "plain", "--push", "-t", f"{host}/b/app:1", str(ctx))
    assert code == 0, err
    assert f"The push refers to repository [{host}/b/app]" in err and ": Pushed" in err
    first, _, _ = remote(plain_registry, f"{host}/b/app:1")

    code, _, err = lb(capfd, "--root", root, "build", "--progress", "plain", "-t", "local:1",
                      "--output", f"type=registry,name={host}/b/other:2", str(ctx))
    assert code == 0, err
    assert ": Layer already exists" in err or "Mounted from b/app" in err
    assert remote(plain_registry, f"{host}/b/other:2")[0]["layers"] == first["layers"]

    code, out, err = lb(capfd, "--root", root, "build", "--progress", "json", "-t", f"{host}/b/oci:3",
                        "--output", "type=image,push=true,oci-mediatypes=true", str(ctx))
    assert code == 0, err
    pushes = [e for e in map(json.loads, out.splitlines()) if e["event"] == "build.pushed"]
    assert pushes[-1]["push"]["aux"]["Tag"] == "3"
    assert remote(plain_registry, f"{host}/b/oci:3")[0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"

    code, _, err = lb(capfd, "--root", root, "build", "--push", str(ctx))
    assert code == 2 and "needs a name to push to" in err
    code, _, err = lb(capfd, "--root", root, "build", "-t", "x:1", "--output", "type=registry,bogus=1", str(ctx))
    assert code == 2 and "unknown key 'bogus'" in err



def test_a_copy_layer_kept_as_a_recipe_pushes_and_pulls_intact(plain_registry: Registry, tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "ctx"
    for i in range(400):
        path = ctx / "data" / f"d{i % 4}" / f"f{i:04}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(3000).hex().encode())
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY data/ /data/\n")
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    layerbuild.build(ctx, tags=["x"], root=warm)
    with open(ctx / "data" / "d1" / "f0201.txt", "ab") as f:
        f.write(b"edited\n")
    layerbuild.build(ctx, tags=["x"], root=warm)  # the edit: its layer kept as a recipe of frames
    layerbuild.build(ctx, tags=["x"], root=cold)
    with Store(warm) as store:
        digest = resolve_image(store, "x").layers[0].digest
        recipe = store.blobs.recipe(digest)
        assert recipe is not None and not recipe.self_contained
    with Store(cold) as store:
        cold_image = resolve_image(store, "x")
    for fmt, compression in (("docker", "gzip"), ("oci", "zstd")):
        name = f"{plain_registry.host}/push/recipe-{compression}:1"
        assert lb(capfd, "--root", str(warm), "tag", "x", name)[0] == 0
        code, _, err = lb(capfd, "--root", str(warm), "push", "-q", "--format", fmt, "--compression", compression, name)
        assert code == 0, err
        manifest, _, config = remote(plain_registry, name)
        assert config["rootfs"]["diff_ids"] == list(cold_image.config.diff_ids)
        if compression == "zstd":
            assert [la["digest"] for la in manifest["layers"]] == [cold_image.layers[0].digest]
        code, _, err = lb(capfd, "--root", str(tmp_path / f"pulled-{compression}"), "pull", name)
        assert code == 0, err  # the pull checks every blob's digest and the layers' diff_ids
