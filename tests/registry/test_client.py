"""The distribution client against real registries (docker-registry 2.8, three kinds), and faults injected
by a loopback proxy: digest mismatches, redirects to another host, 503 with Retry-After, cut connections."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from layerbuild.errors import DigestMismatchError, RegistryAuthError, RegistryError
from layerbuild.reference import Reference, parse_reference
from layerbuild.registry import OCI_MANIFEST, Credentials, RegistryClient
from tests.registry.fixtures import Logins, client_for
from tests.registry.kit import FaultProxy, Registry, StorageServer, once

pytestmark = pytest.mark.integration

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(tag: str = "1", layer: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a small image whose bytes are unique to this call."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}).encode()
    layer = layer if layer is not None else os.urandom(200_000)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha(layer), "size": len(layer)}],
    }).encode()
    return config, layer, manifest


def push(client: RegistryClient, ref: Reference, config: bytes, layer: bytes, manifest: bytes) -> str:
    for blob in (config, layer):
        client.upload_blob(ref, sha(blob), len(blob), blob)
    return client.put_manifest(ref, manifest, OCI_MANIFEST)


def ref_of(host: str, name: str) -> Reference:
    return parse_reference(f"{host}/{name}")


# --- round trips -------------------------------------------------------------------------------------


def test_blob_and_manifest_round_trip(any_registry: Registry, tmp_path: Path) -> None:
    config, layer, manifest = image()
    with client_for(any_registry) as client:
        assert client.ping(any_registry.host) == "registry/2.0"
        ref = ref_of(any_registry.host, f"round/{any_registry.kind}:v1")
        assert client.stat_blob(ref, sha(layer)) is None
        sent: list[int] = []
        assert client.upload_blob(ref, sha(layer), len(layer), layer, progress=sent.append) == "uploaded"
        assert sent[-1] == len(layer) and sent == sorted(sent)
        assert client.upload_blob(ref, sha(layer), len(layer), layer) == "exists"
        assert client.stat_blob(ref, sha(layer)) == len(layer)
        assert client.upload_blob(ref, sha(config), len(config), config) == "uploaded"
        digest = client.put_manifest(ref, manifest, OCI_MANIFEST)
        assert digest == sha(manifest)

        got = client.get_manifest(ref)
        assert (got.data, got.media_type, got.digest) == (manifest, OCI_MANIFEST, digest)
        pinned = client.get_manifest(ref.with_digest(digest))
        assert pinned.data == manifest
        head = client.head_manifest(ref)
        assert head is not None and (head.digest, head.size) == (digest, len(manifest))
        assert client.head_manifest(ref.with_tag("nope")) is None

        assert client.get_blob(ref, sha(config)) == config
        client.download_blob(ref, sha(layer), tmp_path / "layer", size=len(layer))
        assert (tmp_path / "layer").read_bytes() == layer
        assert client.list_tags(ref) == ["v1"]

        # by digest only, and a second tag
        other = ref_of(any_registry.host, f"round/{any_registry.kind}-bydigest")
        push(client, other.with_digest(digest), config, layer, manifest)
        client.put_manifest(ref.with_tag("v2"), manifest, OCI_MANIFEST)
        assert sorted(client.list_tags(ref)) == ["v1", "v2"]
        assert sorted(client.list_tags(ref, page=1)) == ["v1", "v2"]  # two pages, through Link: rel="next"

        # why both kinds of type go in Accept: distribution does not offer an OCI manifest to a client
        # that asks for Docker's types only
        with pytest.raises(RegistryError) as info:
            client.get_manifest(ref, accept=[DOCKER_MANIFEST])
        assert info.value.code == "MANIFEST_UNKNOWN"


def test_a_docker_manifest_and_chunked_upload(tls_registry: Registry) -> None:
    config, layer, _ = image()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": sha(layer),
                    "size": len(layer)}]}).encode()
    with client_for(tls_registry) as client:
        ref = ref_of(tls_registry.host, "docker/chunked:1")
        sent: list[int] = []
        assert client.upload_blob(ref, sha(layer), len(layer), layer, chunked=True, chunk_size=64_000,
                                  progress=sent.append) == "uploaded"
        assert sent == [64_000, 128_000, 192_000, len(layer)]
        client.upload_blob(ref, sha(config), len(config), lambda: open_bytes(config))
        client.put_manifest(ref, manifest, DOCKER_MANIFEST)
        got = client.get_manifest(ref)
        assert got.media_type == DOCKER_MANIFEST and got.data == manifest
        assert client.get_blob(ref, sha(layer)) == layer


def open_bytes(data: bytes):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(data)


def test_cross_repository_mount(any_registry: Registry) -> None:
    config, layer, manifest = image()
    with client_for(any_registry) as client:
        src = ref_of(any_registry.host, f"mount/{any_registry.kind}-src:1")
        push(client, src, config, layer, manifest)
        dst = ref_of(any_registry.host, f"mount/{any_registry.kind}-dst:1")
        assert client.upload_blob(dst, sha(layer), len(layer), layer, mount_from=src) == "mounted"
        assert client.stat_blob(dst, sha(layer)) == len(layer)
    if any_registry.token is not None:  # the mount asked for pull on the source as well as push on the target
        scopes = [r.get("scopes", []) for r in any_registry.token.requests]
        assert any(f"repository:{src.path}:pull" in s and f"repository:{dst.path}:pull,push" in s for s in scopes)


def test_a_manifest_that_does_not_exist(any_registry: Registry) -> None:
    with client_for(any_registry) as client:
        config, layer, manifest = image()
        ref = ref_of(any_registry.host, f"missing/{any_registry.kind}:1")
        push(client, ref, config, layer, manifest)
        with pytest.raises(RegistryError) as info:
            client.get_manifest(ref.with_tag("nosuchtag"))
        assert info.value.code == "MANIFEST_UNKNOWN"
        assert f"{ref.name}:nosuchtag" in info.value.message
        with pytest.raises(RegistryError) as info:
            client.get_blob(ref, sha(b"never uploaded"))
        assert info.value.code == "BLOB_UNKNOWN"
        with pytest.raises(RegistryError) as info:
            client.get_manifest(ref_of(any_registry.host, f"missing/{any_registry.kind}-norepo:1"))
        assert info.value.code in ("NAME_UNKNOWN", "MANIFEST_UNKNOWN")


def test_many_threads_share_one_client(token_registry: Registry) -> None:
    blobs = [os.urandom(50_000) for _ in range(12)]
    ref = ref_of(token_registry.host, "threads/app:1")
    errors: list[BaseException] = []
    before = len(token_registry.token.requests) if token_registry.token else 0
    with client_for(token_registry) as client:
        def work(blob: bytes) -> None:
            try:
                client.upload_blob(ref, sha(blob), len(blob), blob)
                assert client.get_blob(ref, sha(blob)) == blob
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(b,)) for b in blobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert token_registry.token is not None
    # one token per scope set, fetched once under the session's lock, not once per thread
    assert len(token_registry.token.requests) - before <= 2


# --- auth ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tls_registry", "token_registry"])
def test_wrong_credentials_are_refused_without_showing_them(kind: str, request: pytest.FixtureRequest) -> None:
    registry: Registry = request.getfixturevalue(kind)
    wrong = "not-the-Pa55word-42"
    with client_for(registry, password=wrong) as client, pytest.raises(RegistryAuthError) as info:
        client.get_manifest(ref_of(registry.host, "auth/app:1"))
    text = info.value.render() + repr(info.value) + str(info.value.__cause__ or "")
    assert wrong not in text and registry.password not in text
    assert f"layerbuild login {registry.host}" in text


@pytest.mark.parametrize("kind", ["tls_registry", "token_registry"])
def test_anonymous_access_to_a_private_registry(kind: str, request: pytest.FixtureRequest) -> None:
    registry: Registry = request.getfixturevalue(kind)
    with client_for(registry, anonymous=True) as client, pytest.raises(RegistryAuthError) as info:
        client.get_manifest(ref_of(registry.host, "auth/app:1"))
    assert info.value.code == "UNAUTHORIZED"
    assert f"layerbuild login {registry.host}" in (info.value.hint or "")


def test_tokens_are_cached_per_scope(token_registry: Registry) -> None:
    assert token_registry.token is not None
    config, layer, manifest = image()
    ref = ref_of(token_registry.host, "tokens/app:1")
    with client_for(token_registry) as client:
        push(client, ref, config, layer, manifest)
    with client_for(token_registry) as client:
        start = len(token_registry.token.requests)
        for _ in range(3):
            client.get_manifest(ref)
            client.get_blob(ref, sha(config))
        pulls = token_registry.token.requests[start:]
        assert [r["scopes"] for r in pulls] == [[f"repository:{ref.path}:pull"]]
        assert pulls[0]["user"] == token_registry.user and pulls[0]["method"] == "GET"


def test_a_token_the_registry_rejects_is_renewed(token_registry: Registry) -> None:
    assert token_registry.token is not None
    config, layer, manifest = image()
    with client_for(token_registry) as client:
        ref = ref_of(token_registry.host, "tokens/renew:1")
        push(client, ref, config, layer, manifest)
        session = client.session(ref.domain)
        session.tokens.put([f"repository:{ref.path}:pull"], "forged-or-expired-token", 300)
        start = len(token_registry.token.requests)
        assert client.get_manifest(ref).data == manifest
        assert len(token_registry.token.requests) == start + 1


def test_oauth2_post_form_and_identity_tokens(token_registry: Registry) -> None:
    assert token_registry.token is not None
    config, layer, manifest = image()
    host = token_registry.host
    with client_for(token_registry, oauth=True) as client:
        ref = ref_of(host, "oauth/app:1")
        push(client, ref, config, layer, manifest)
    assert token_registry.token.requests[-1]["method"] == "POST"
    assert token_registry.token.requests[-1]["grant"] == "password"
    assert token_registry.token.requests[-1]["client_id"] == "layerbuild"

    refresh = next(iter(token_registry.token.refresh_tokens))
    with RegistryClient(credentials=Logins({host: Credentials(identity_token=refresh)})) as client:
        assert client.get_manifest(ref).data == manifest
    assert token_registry.token.requests[-1]["grant"] == "refresh_token"
    with RegistryClient(credentials=Logins({host: Credentials(identity_token="revoked")})) as client, \
            pytest.raises(RegistryAuthError) as info:
        client.get_manifest(ref)
    assert "revoked" not in info.value.render()


def test_check_login(tls_registry: Registry, token_registry: Registry, plain_registry: Registry) -> None:
    for reg in (tls_registry, token_registry):
        with client_for(reg, anonymous=True) as client:
            client.check_login(reg.host, Credentials(reg.user, reg.password))
        with client_for(reg, anonymous=True) as client, pytest.raises(RegistryAuthError):
            client.check_login(reg.host, Credentials(reg.user, "wrong"))
    with client_for(plain_registry) as client:
        client.check_login(plain_registry.host, Credentials("anyone", "anything"))


# --- transport -----------------------------------------------------------------------------------------


def test_tls_is_verified(tls_registry: Registry, tmp_path: Path) -> None:
    with RegistryClient(credentials=Logins({}), certs_dirs=[tmp_path / "empty"]) as client, \
            pytest.raises(RegistryError) as info:
        client.ping(tls_registry.host)
    assert "TLS certificate not trusted" in info.value.message
    assert f"/etc/docker/certs.d/{tls_registry.host}/ca.crt" in (info.value.hint or "")
    # the CA from $LAYERBUILD_CERTS_DIRS, as a user would put it in certs.d
    assert tls_registry.certs_dir is not None
    env = {"LAYERBUILD_CERTS_DIRS": f"{tmp_path / 'empty'}:{tls_registry.certs_dir}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with RegistryClient(credentials=Logins({})) as client:
            assert client.ping(tls_registry.host) == "registry/2.0"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_registry_that_is_not_there() -> None:
    from tests.registry.kit import free_port

    host = f"127.0.0.1:{free_port()}"
    with RegistryClient(credentials=Logins({})) as client, pytest.raises(RegistryError) as info:
        client.get_manifest(ref_of(host, "app:1"))
    assert f"cannot connect to {host}: connection refused" in info.value.message


def test_plain_http_only_for_loopback_or_insecure() -> None:
    from layerbuild.registry.session import Options, OriginClients, Session
    from layerbuild.registry.transport import RetryPolicy

    opts = Options(credentials=None, insecure=frozenset({"registry.internal:5000"}), retry=RetryPolicy(), timeout=5)
    clients = OriginClients(opts)
    assert Session("127.0.0.1:5000", opts, clients).plain_http_allowed
    assert Session("localhost:5000", opts, clients).plain_http_allowed
    assert Session("registry.internal:5000", opts, clients).plain_http_allowed
    assert not Session("registry.internal:5001", opts, clients).plain_http_allowed
    assert not Session("docker.io", opts, clients).plain_http_allowed
    assert Session("docker.io", opts, clients).host == "registry-1.docker.io"


# --- faults ------------------------------------------------------------------------------------------------


@pytest.fixture
def proxied(tls_registry: Registry) -> tuple[Registry, FaultProxy]:
    proxy = FaultProxy(tls_registry)
    yield tls_registry, proxy  # type: ignore[misc]
    proxy.close()


def _seed(registry: Registry, name: str) -> tuple[Reference, bytes, bytes, bytes]:
    config, layer, manifest = image()
    with client_for(registry) as client:
        ref = ref_of(registry.host, name)
        push(client, ref, config, layer, manifest)
    return ref, config, layer, manifest


def test_a_pinned_manifest_that_comes_back_altered(proxied: tuple[Registry, FaultProxy]) -> None:
    registry, proxy = proxied
    ref, _, _, manifest = _seed(registry, "faults/pinned:1")
    proxy.rules.append(lambda m, p, h: ("alter", lambda b: b.replace(b'"schemaVersion": 2', b'"schemaVersion":2'))
                       if "/manifests/" in p and m == "GET" else None)
    with client_for(registry, host=proxy.host) as client:
        via = Reference(proxy.host, ref.path, ref.tag)
        with pytest.raises(DigestMismatchError) as info:
            client.get_manifest(via.with_digest(sha(manifest)))
        assert sha(manifest) in info.value.message
        with pytest.raises(DigestMismatchError):  # by tag: checked against Docker-Content-Digest
            client.get_manifest(via)


def test_a_blob_that_comes_back_altered_or_truncated(proxied: tuple[Registry, FaultProxy], tmp_path: Path) -> None:
    registry, proxy = proxied
    ref, _, layer, _ = _seed(registry, "faults/blob:1")
    flip = lambda b: b[:1000] + bytes([b[1000] ^ 1]) + b[1001:]  # noqa: E731
    proxy.rules.append(once(1, lambda m, p, h: ("alter", flip) if "/blobs/sha256:" in p and m == "GET" else None))
    proxy.rules.append(once(1, lambda m, p, h: ("alter", lambda b: b[:-10]) if "/blobs/sha256:" in p and m == "GET"
                            else None))
    with client_for(registry, host=proxy.host) as client:
        via = Reference(proxy.host, ref.path, ref.tag)
        with pytest.raises(DigestMismatchError, match="hashes to"):
            client.download_blob(via, sha(layer), tmp_path / "layer", size=len(layer))
        with pytest.raises(DigestMismatchError, match=f"not {len(layer)}"):
            client.download_blob(via, sha(layer), tmp_path / "layer", size=len(layer))
        assert list(tmp_path.iterdir()) == []  # nothing partial left
        client.download_blob(via, sha(layer), tmp_path / "layer", size=len(layer))
        assert (tmp_path / "layer").read_bytes() == layer


def test_a_redirect_to_another_host_gets_no_credentials(any_registry: Registry, storage: StorageServer) -> None:
    ref, _, layer, _ = _seed(any_registry, f"faults/redirect-{any_registry.kind}:1")
    proxy = FaultProxy(any_registry)
    try:
        storage.blobs[f"/store/{sha(layer)}"] = layer
        proxy.rules.append(lambda m, p, h: ("redirect", f"http://{storage.host}/store/{sha(layer)}?sig=x")
                           if "/blobs/sha256:" in p and m == "GET" else None)
        with client_for(any_registry, host=proxy.host) as client:
            via = Reference(proxy.host, ref.path, ref.tag)
            assert client.get_blob(via, sha(layer)) == layer
        blob_gets = [s for s in proxy.seen if "/blobs/sha256:" in s.path and s.method == "GET"]
        if any_registry.kind != "plain":
            assert any("Authorization" in s.headers for s in blob_gets)  # the registry got them
        assert len(storage.seen) == 1
        assert not any(k.lower() in ("authorization", "cookie") for k in storage.seen[0].headers)
        assert storage.seen[0].path.endswith("?sig=x")
    finally:
        proxy.close()


def test_retry_on_503_honours_retry_after(proxied: tuple[Registry, FaultProxy]) -> None:
    registry, proxy = proxied
    ref, _, _, manifest = _seed(registry, "faults/busy:1")
    proxy.rules.append(once(2, lambda m, p, h: ("status", 503, {"Retry-After": "1"}, b"busy")
                            if "/manifests/" in p else None))
    sleeps: list[float] = []
    with client_for(registry, host=proxy.host, sleeps=sleeps) as client:
        assert client.get_manifest(Reference(proxy.host, ref.path, ref.tag)).data == manifest
    assert sleeps == [1.0, 1.0]
    # a registry that stays busy: a clean error after the policy's attempts
    proxy.rules.append(lambda m, p, h: ("status", 503, {}, b"busy") if "/manifests/" in p else None)
    with client_for(registry, host=proxy.host) as client, pytest.raises(RegistryError) as info:
        client.get_manifest(Reference(proxy.host, ref.path, ref.tag))
    assert info.value.status == 503


def test_a_cut_download_resumes_with_range(proxied: tuple[Registry, FaultProxy], tmp_path: Path) -> None:
    registry, proxy = proxied
    ref, _, layer, _ = _seed(registry, "faults/resume:1")
    proxy.rules.append(once(2, lambda m, p, h: ("cut", 70_000) if "/blobs/sha256:" in p and m == "GET"
                            and "Range" not in h else None))
    with client_for(registry, host=proxy.host) as client:
        client.download_blob(Reference(proxy.host, ref.path, ref.tag), sha(layer), tmp_path / "layer", size=len(layer))
    assert (tmp_path / "layer").read_bytes() == layer
    gets = [s for s in proxy.seen if "/blobs/sha256:" in s.path and s.method == "GET"]
    assert [s.headers.get("Range") for s in gets] == [None, "bytes=70000-"]


def test_a_cut_upload_starts_over(proxied: tuple[Registry, FaultProxy]) -> None:
    registry, proxy = proxied
    _, layer, _ = image()
    proxy.rules.append(once(1, lambda m, p, h: ("drop",) if m == "PUT" and "/blobs/uploads/" in p else None))
    ref = ref_of(proxy.host, "faults/upload:1")
    with client_for(registry, host=proxy.host) as client:
        assert client.upload_blob(ref, sha(layer), len(layer), layer) == "uploaded"
        assert client.get_blob(ref, sha(layer)) == layer
    assert sum(1 for s in proxy.seen if s.method == "POST") == 2


def test_chunked_fallback_when_a_monolithic_put_is_refused(proxied: tuple[Registry, FaultProxy]) -> None:
    registry, proxy = proxied
    _, layer, _ = image()
    proxy.rules.append(lambda m, p, h: ("status", 413, {}, b"too large")
                       if m == "PUT" and int(h.get("Content-Length") or 0) > 0 else None)
    ref = ref_of(proxy.host, "faults/fallback:1")
    with client_for(registry, host=proxy.host) as client:
        assert client.upload_blob(ref, sha(layer), len(layer), layer, chunk_size=100_000) == "uploaded"
        assert client.get_blob(ref, sha(layer)) == layer
    assert sum(1 for s in proxy.seen if s.method == "PATCH") == 2


def test_single_post_upload(proxied: tuple[Registry, FaultProxy]) -> None:
    registry, proxy = proxied
    blob = os.urandom(5000)
    ref = ref_of(proxy.host, "faults/single:1")
    with client_for(registry, host=proxy.host) as client:
        assert client.upload_blob(ref, sha(blob), len(blob), blob, single_post=True) == "uploaded"
        assert client.get_blob(ref, sha(blob)) == blob
    posts = [s for s in proxy.seen if s.method == "POST"]
    assert f"digest={sha(blob)}".replace(":", "%3A") in posts[0].path
    assert posts[0].headers.get("Content-Length") == str(len(blob))
    # distribution 2.8 answers the one-request form with an upload session: the PUT finishes it
    puts = [s for s in proxy.seen if s.method == "PUT"]
    assert len(puts) == 1


def test_client_certificates_from_certs_d(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.registry.kit import start_registry

    registry = start_registry("mtls", tmp_path_factory.mktemp("registry-mtls"))
    try:
        assert registry.ca is not None and registry.certs_dir is not None
        with client_for(registry) as client, pytest.raises(RegistryError) as info:
            client.ping(registry.host)
        assert "client certificate" in info.value.message
        assert f"/etc/docker/certs.d/{registry.host}/client.cert" in (info.value.hint or "")
        # docker's layout: NAME.cert with NAME.key beside the CA
        hostdir = registry.certs_dir / registry.host
        (hostdir / "client.cert").write_bytes(registry.ca.client_cert.read_bytes())
        (hostdir / "client.key").write_bytes(registry.ca.client_key.read_bytes())
        with client_for(registry) as client:
            assert client.ping(registry.host) == "registry/2.0"
            ref = ref_of(registry.host, "mtls/app:1")
            assert client.upload_blob(ref, sha(b"m"), 1, b"m") == "uploaded"
    finally:
        registry.stop()


@pytest.mark.parametrize("kind", ["tls_registry", "token_registry"])
def test_credentials_and_tokens_never_reach_the_logs(kind: str, request: pytest.FixtureRequest,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import base64
    import logging

    registry: Registry = request.getfixturevalue(kind)
    caplog.set_level(logging.DEBUG)  # httpx's and httpcore's too
    with client_for(registry) as client:
        ref, config, _, _ = _seed(registry, f"logs/{registry.kind}:1")
        client.get_manifest(ref)
        client.get_blob(ref, sha(config))
        session = client.session(ref.domain)
        tokens = [t.value for t in session.tokens._tokens.values()]
    assert caplog.records  # the HTTP libraries did log the requests
    text = caplog.text
    assert registry.password not in text
    assert base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode() not in text
    assert all(t not in text for t in tokens)
    assert (kind == "token_registry") == bool(tokens)


def test_the_scope_a_challenge_names_is_asked_for(token_registry: Registry) -> None:
    ref, _, _, manifest = _seed(token_registry, "tokens/scope:1")
    with client_for(token_registry) as client:
        session = client.session(ref.domain)
        # a request made with no scope at all: the registry's 401 names the scope it wants
        resp = session.request("GET", f"/v2/{ref.path}/manifests/1", scopes=[], what="GET manifest",
                               headers={"Accept": OCI_MANIFEST})
        assert resp.status_code == 200 and resp.content == manifest
    assert token_registry.token is not None
    assert token_registry.token.requests[-1]["scopes"] == [f"repository:{ref.path}:pull"]


def test_rate_limited_to_the_end(proxied: tuple[Registry, FaultProxy]) -> None:
    registry, proxy = proxied
    ref, _, _, _ = _seed(registry, "faults/limited:1")
    body = json.dumps({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]}).encode()
    proxy.rules.append(lambda m, p, h: ("status", 429, {"Retry-After": "0", "Content-Type": "application/json"}, body)
                       if "/manifests/" in p else None)
    sleeps: list[float] = []
    with client_for(registry, host=proxy.host, sleeps=sleeps) as client, pytest.raises(RegistryError) as info:
        client.get_manifest(Reference(proxy.host, ref.path, ref.tag))
    assert info.value.code == "TOOMANYREQUESTS" and "rate-limiting" in info.value.message
    assert f"layerbuild login {proxy.host}" in (info.value.hint or "")
    assert sleeps == [0.0] * 4  # the default policy's five attempts
