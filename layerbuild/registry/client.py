"""The OCI distribution client: manifests, indexes and blobs by digest, verified as they arrive; uploads
that skip what exists and mount across repositories; tags. What pull, push and the registry cache use.

Thread-safe: one `RegistryClient` may serve many threads at once (each registry's ping, credentials and
tokens are guarded; the connection pools are shared). Bounding how many transfers run at once is the
caller's concern. Close it (or use it as a context manager) to close its connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from layerbuild.errors import DigestMismatchError, RegistryError, UsageError
from layerbuild.reference import Reference
from layerbuild.registry import wire
from layerbuild.registry.auth import pull_scope, push_scope
from layerbuild.registry.credentials import Credentials, DockerConfig
from layerbuild.registry.failures import transport_error
from layerbuild.registry.session import Body, CredentialSource, Options, OriginClients, Session
from layerbuild.registry.transport import RetryPolicy, insecure_from_env, retryable_transport_error

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MAX_MANIFEST = 4 << 20  # containerd's limit on a manifest or index
CHUNK = 1 << 20
DEFAULT_UPLOAD_CHUNK = 16 << 20

# A blob to upload: its bytes, or a function that opens a fresh binary reader of them (called per try).
BlobSource = bytes | Callable[[], BinaryIO]


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as the registry holds it: the exact bytes, their media type and digest."""

    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)

    def json(self) -> dict[str, object]:
        value = json.loads(self.data)
        if not isinstance(value, dict):
            raise RegistryError(f"manifest {self.digest} is not a JSON object")
        return value


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


def _hasher(digest: str) -> tuple[hashlib._Hash, str]:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or not hexpart:
        raise UsageError(f"unsupported digest {digest!r}", hint="use sha256:HEX")
    return hashlib.new(algorithm), hexpart


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class RegistryClient:
    """A client of OCI distribution registries (any number of them, by the domain of each name).

    `credentials`: where logins come from (default: docker's config.json, see DockerConfig).
    `insecure`: registries (HOST[:PORT]) that may be reached over plain HTTP, or over TLS without
    verification (plus $LAYERBUILD_INSECURE_REGISTRIES); loopback registries may use plain HTTP always.
    `certs_dirs`: where `<host>/*.crt` CAs and `*.cert`/`*.key` client pairs are looked for (default
    $LAYERBUILD_CERTS_DIRS, else /etc/docker/certs.d and /etc/containers/certs.d). `oauth`: fetch
    tokens for a password with the OAuth2 POST form instead of GET with Basic. `sleep`: how waits
    between retries are spent (tests record them). `timeout`/`connect_timeout`: seconds a read (or a
    connection) may stall before it counts as lost.
    """

    def __init__(self, *, credentials: CredentialSource | None = None, insecure: Iterable[str] = (),
                 retry: RetryPolicy | None = None, timeout: float = 60.0, oauth: bool = False,
                 certs_dirs: Iterable[Path] | None = None, sleep: Callable[[float], None] | None = None,
                 connect_timeout: float = 15.0) -> None:
        self.options = Options(
            credentials=credentials if credentials is not None else DockerConfig(),
            insecure=frozenset(insecure) | insecure_from_env(),
            retry=retry or RetryPolicy(),
            timeout=timeout,
            connect_timeout=connect_timeout,
            oauth=oauth,
            certs_dirs=list(certs_dirs) if certs_dirs is not None else None,
        )
        if sleep is not None:
            self.options.sleep = sleep
        self._clients = OriginClients(self.options)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._clients.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self, domain: str) -> Session:
        with self._lock:
            s = self._sessions.get(domain)
            if s is None:
                s = self._sessions[domain] = Session(domain, self.options, self._clients)
            return s

    # --- registry -------------------------------------------------------------------------------

    def ping(self, domain: str) -> str:
        """Check that `domain` is a registry (GET /v2/); returns its API version header (`registry/2.0`)."""
        s = self.session(domain)
        s.base()
        return s.api_version

    def check_login(self, domain: str, creds: Credentials) -> None:
        """Check `creds` against the registry as `docker login` does; RegistryAuthError if refused."""
        s = self.session(domain)
        challenge = s.challenge
        s.set_credentials(creds)
        if challenge is None:
            return  # the registry takes anyone
        if challenge.scheme == "bearer":
            s.fetch_token(challenge, [], creds)
            return
        resp = s.request("GET", "/v2/", scopes=[], what="login", retry=True)
        if resp.status_code != 200:
            raise s.fail(resp, what="login")

    # --- manifests ------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference, *, accept: Iterable[str] = MANIFEST_TYPES) -> Manifest:
        """The manifest or index `ref` names (its digest if pinned, else its tag), verified: against the
        pinned digest, else against the registry's Docker-Content-Digest when it sends one."""
        s = self.session(ref.domain)
        what = "GET manifest"
        resp = s.request("GET", f"/v2/{ref.path}/manifests/{ref.identifier}", scopes=[pull_scope(ref.path)],
                         what=what, headers={"Accept": ", ".join(accept)}, stream=True)
        try:
            if resp.status_code != 200:
                raise s.fail(resp, what=what, repository=ref.name, reference=ref.identifier)
            data = _read_limited(resp, MAX_MANIFEST, f"{ref}: manifest", host=s.domain)
        finally:
            resp.close()
        media_type = _media_type(resp.headers.get("content-type", ""), data)
        expected = ref.digest or resp.headers.get("docker-content-digest")
        algorithm = (expected or "sha256:").partition(":")[0]
        actual = digest_of(data, algorithm if algorithm in ("sha256", "sha512") else "sha256")
        if expected and actual != expected:
            raise DigestMismatchError(f"{s.domain}: the manifest of {ref} hashes to {actual}, not {expected}",
                                      hint="the registry (or something between) sent other bytes; nothing "
                                           "was kept")
        return Manifest(data, media_type, actual)

    def head_manifest(self, ref: Reference, *, accept: Iterable[str] = MANIFEST_TYPES) -> Descriptor | None:
        """The digest, media type and size of what `ref` names, or None if the registry has no such manifest.
        Falls back to GET when the registry's HEAD answer lacks a digest."""
        s = self.session(ref.domain)
        resp = s.request("HEAD", f"/v2/{ref.path}/manifests/{ref.identifier}", scopes=[pull_scope(ref.path)],
                         what="HEAD manifest", headers={"Accept": ", ".join(accept)})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise s.fail(resp, what="HEAD manifest", repository=ref.name, reference=ref.identifier)
        digest = resp.headers.get("docker-content-digest")
        if not digest:
            m = self.get_manifest(ref, accept=accept)
            return Descriptor(m.media_type, m.digest, m.size)
        if ref.digest and digest != ref.digest:
            raise DigestMismatchError(f"{s.domain}: {ref} is announced as {digest}")
        size = int(resp.headers.get("content-length") or 0)
        return Descriptor(resp.headers.get("content-type", "").split(";")[0].strip(), digest, size)

    def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> str:
        """Store `data` under `ref`'s tag (or its digest, which must be the data's); returns the digest."""
        s = self.session(ref.domain)
        digest = digest_of(data)
        if ref.digest is not None and ref.digest != digest:
            raise DigestMismatchError(f"the manifest to push hashes to {digest}, not {ref.digest}")
        identifier = ref.tag if ref.digest is None and ref.tag else ref.identifier
        resp = s.request("PUT", f"/v2/{ref.path}/manifests/{identifier}", scopes=[push_scope(ref.path)],
                         what="PUT manifest", headers={"Content-Type": media_type}, content=data)
        if resp.status_code not in (200, 201, 202):
            raise s.fail(resp, what="PUT manifest", repository=ref.name, reference=identifier)
        answered = resp.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise DigestMismatchError(f"{s.domain}: stored the manifest of {ref} as {answered}, not {digest}")
        return digest

    def list_tags(self, repo: Reference, *, page: int = 1000) -> list[str]:
        """Every tag of `repo`, following the registry's `Link: <…>; rel="next"` pages."""
        s = self.session(repo.domain)
        url: str | None = f"/v2/{repo.path}/tags/list?n={page}"
        tags: list[str] = []
        while url:
            resp = s.request("GET", url, scopes=[pull_scope(repo.path)], what="list tags")
            if resp.status_code != 200:
                raise s.fail(resp, what="list tags", repository=repo.name)
            try:
                got = json.loads(resp.content).get("tags") or []
            except (json.JSONDecodeError, AttributeError):
                raise RegistryError(f"{s.domain}: the tag list of {repo.name} is not JSON") from None
            tags.extend(str(t) for t in got)
            nxt = resp.links.get("next", {}).get("url")
            url = str(wire.URL(s.base()).join(nxt)) if nxt else None
        return tags

    # --- blobs: reading ---------------------------------------------------------------------------

    def stat_blob(self, repo: Reference, digest: str) -> int | None:
        """The size of blob `digest` in `repo`, or None if the registry lacks it there."""
        s = self.session(repo.domain)
        resp = s.request("HEAD", f"/v2/{repo.path}/blobs/{digest}", scopes=[pull_scope(repo.path)],
                         what="HEAD blob")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise s.fail(resp, what="HEAD blob", repository=repo.name, reference=digest)
        return int(resp.headers.get("content-length") or 0)

    def open_blob(self, repo: Reference, digest: str, *, size: int | None = None,
                  check: bool = True) -> Iterator[bytes]:
        """The bytes of blob `digest`, streamed in chunks and hashed as they come (`check=False`: not
        hashed, for a consumer that hashes them itself, as the store's blob writer does; sizes are
        checked either way).

        A dropped connection resumes with `Range` where it stopped. The iterator raises
        DigestMismatchError at its end if the bytes do not hash to `digest` (or are not `size` long, or
        overrun it on the way): nothing it yielded is to be trusted until it has ended without an error.
        """
        s = self.session(repo.domain)
        hasher, hexpart = _hasher(digest)
        got = 0
        attempt = 0
        path = f"/v2/{repo.path}/blobs/{digest}"
        scopes = [pull_scope(repo.path)]
        # The digest covers the bytes as stored: ask for no transfer encoding, and read them raw.
        headers = {"Accept-Encoding": "identity"}
        resp = s.request("GET", path, scopes=scopes, what="GET blob", headers=headers, stream=True)
        try:
            while True:
                if resp.status_code not in (200, 206):
                    raise s.fail(resp, what="GET blob", repository=repo.name, reference=digest)
                skip = got if resp.status_code == 200 else 0  # a server that ignored Range sends it all
                if resp.status_code == 206 and not resp.headers.get("content-range", "").startswith(f"bytes {got}-"):
                    raise RegistryError(f"{s.domain}: a resumed download of {digest} did not start at byte {got}")
                try:
                    for chunk in resp.iter_raw():  # as it arrives: a cut keeps what came
                        if skip:
                            cut = min(skip, len(chunk))
                            chunk, skip = chunk[cut:], skip - cut
                            if not chunk:
                                continue
                        got += len(chunk)
                        if size is not None and got > size:
                            raise DigestMismatchError(f"{s.domain}: blob {digest} of {repo.name} is longer than its "
                                                      f"{size} bytes", hint="nothing of it was kept")
                        if check:
                            hasher.update(chunk)
                        yield chunk
                    break
                except wire.TransportError as exc:
                    resp.close()
                    wait = s.options.retry.delay(attempt) if retryable_transport_error(exc) else None
                    if wait is None:
                        raise transport_error(exc, host=s.host, what=f"GET blob {digest}") from None
                    s.options.sleep(wait)
                    attempt += 1
                    resp = s.request("GET", path, scopes=scopes, what="GET blob", stream=True,
                                     headers={**headers, "Range": f"bytes={got}-"})
        finally:
            resp.close()
        if size is not None and got != size:
            raise DigestMismatchError(f"{s.domain}: blob {digest} of {repo.name} is {got} bytes, not {size}",
                                      hint="nothing of it was kept")
        if check and hasher.hexdigest() != hexpart:
            raise DigestMismatchError(f"{s.domain}: blob {digest} of {repo.name} hashes to "
                                      f"{digest.partition(':')[0]}:{hasher.hexdigest()}",
                                      hint="the registry (or something between) sent other bytes; nothing was kept")

    def get_blob(self, repo: Reference, digest: str, *, max_size: int = 64 << 20) -> bytes:
        """A small blob (a config) in memory, verified."""
        parts: list[bytes] = []
        total = 0
        for chunk in self.open_blob(repo, digest):
            total += len(chunk)
            if total > max_size:
                raise RegistryError(f"blob {digest} of {repo.name} is larger than {max_size} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def download_blob(self, repo: Reference, digest: str, dest: Path, *, size: int | None = None) -> None:
        """Blob `digest` into the file `dest`, which appears (renamed from a temp file beside it) only
        once every byte is verified."""
        tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as f:
                for chunk in self.open_blob(repo, digest, size=size):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # --- blobs: writing ---------------------------------------------------------------------------

    def upload_blob(self, repo: Reference, digest: str, size: int, source: BlobSource, *,
                    mount_from: Reference | None = None, chunked: bool = False, single_post: bool = False,
                    chunk_size: int = DEFAULT_UPLOAD_CHUNK, progress: Callable[[int], None] | None = None) -> str:
        """Make blob `digest` (of `size` bytes, read from `source`) exist in `repo`; returns what it took:
        `exists` (nothing sent), `mounted` (from `mount_from`, a repository of the same registry) or
        `uploaded`. A monolithic POST+PUT, falling back to chunked PATCHes where the registry refuses
        that (or `chunked`); a lost connection or 5xx restarts the upload from a new session.
        `single_post` tries the one-request form first (POST ?digest= with the body, for small blobs);
        a registry that answers it with an upload session gets the usual PUT. `progress(n)` is told the
        bytes sent so far as they go (from 0 again when an upload starts over)."""
        s = self.session(repo.domain)
        if self.stat_blob(repo, digest) is not None:
            return "exists"
        scopes = [push_scope(repo.path)]
        params: dict[str, str] = {}
        if mount_from is not None and mount_from.domain == repo.domain and mount_from.path != repo.path:
            scopes.append(pull_scope(mount_from.path))
            params = {"mount": digest, "from": mount_from.path}
        attempt = 0
        while True:
            try:
                return self._upload_once(s, repo, digest, size, source, scopes, params, chunked, chunk_size,
                                         single_post and not params, progress)
            except _Retry as retry:
                wait = s.options.retry.delay(attempt, retry.response)
                if wait is None:
                    raise retry.error from None
                s.options.sleep(wait)
                attempt += 1
                if self.stat_blob(repo, digest) is not None:  # the lost answer was the registry's 201
                    return "uploaded"
            except _Fallback:
                chunked = True

    def _upload_once(self, s: Session, repo: Reference, digest: str, size: int, source: BlobSource,
                     scopes: list[str], params: dict[str, str], chunked: bool, chunk_size: int,
                     single_post: bool = False, progress: Callable[[int], None] | None = None) -> str:
        what = "upload blob"
        if single_post and not chunked:
            resp = self._upload_step(s, "POST", f"/v2/{repo.path}/blobs/uploads/", scopes, what,
                                     params={"digest": digest}, content=_body(source, progress),
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(size)})
            if resp.status_code == 201:
                return self._uploaded(s, resp, digest)
        else:
            resp = self._upload_step(s, "POST", f"/v2/{repo.path}/blobs/uploads/", scopes, what, params=params,
                                     headers={"Content-Length": "0"}, content=b"")
        if resp.status_code == 201 and params:
            return "mounted"
        if resp.status_code != 202 or "location" not in resp.headers:
            raise s.fail(resp, what=what, repository=repo.name, reference=digest)
        location = str(wire.URL(s.base()).join(resp.headers["location"]))
        if not chunked:
            url = wire.URL(location).with_params({"digest": digest})
            resp = self._upload_step(s, "PUT", str(url), scopes, what, content=_body(source, progress),
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Length": str(size)})
            if resp.status_code in (400, 405, 413, 501) and not _digest_problem(resp):
                raise _Fallback()
        else:
            minimum = int(resp.headers.get("oci-chunk-min-length") or 0)
            step = max(chunk_size, minimum, 1)
            offset = 0
            with _opened(source) as reader:
                while offset < size:
                    chunk = reader.read(min(step, size - offset))
                    if not chunk:
                        raise RegistryError(f"the blob {digest} to upload ended at byte {offset} of {size}")
                    resp = self._upload_step(s, "PATCH", location, scopes, what, content=chunk, headers={
                        "Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                        "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
                    if resp.status_code != 202 or "location" not in resp.headers:
                        raise s.fail(resp, what=what, repository=repo.name, reference=digest)
                    location = str(wire.URL(s.base()).join(resp.headers["location"]))
                    offset += len(chunk)
                    if progress is not None:
                        progress(offset)
            url = wire.URL(location).with_params({"digest": digest})
            resp = self._upload_step(s, "PUT", str(url), scopes, what, content=b"",
                                     headers={"Content-Length": "0"})
        if resp.status_code not in (201, 204):
            raise s.fail(resp, what=what, repository=repo.name, reference=digest)
        return self._uploaded(s, resp, digest)

    @staticmethod
    def _uploaded(s: Session, resp: wire.Response, digest: str) -> str:
        answered = resp.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise DigestMismatchError(f"{s.domain}: stored the blob as {answered}, not {digest}")
        return "uploaded"

    def _upload_step(self, s: Session, method: str, url: str, scopes: list[str], what: str, *,
                     content: Body, headers: dict[str, str], params: dict[str, str] | None = None) -> wire.Response:
        """One request of an upload; failures that may pass raise _Retry (the caller starts over)."""
        try:
            resp = s.request(method, url, scopes=scopes, what=what, headers=headers, params=params,
                             content=content, retry=False)
        except RegistryError as exc:
            if exc.transient:
                raise _Retry(exc, None) from None
            raise
        if resp.status_code in (408, 429, 500, 502, 503, 504):
            raise _Retry(s.fail(resp, what=what), resp)
        return resp


class _Retry(Exception):
    def __init__(self, error: RegistryError, response: wire.Response | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.response = response


class _Fallback(Exception):
    """The registry refused a monolithic upload: do it in chunks."""


def _digest_problem(resp: wire.Response) -> bool:
    from layerbuild.registry.failures import registry_codes

    return any(code in ("DIGEST_INVALID", "SIZE_INVALID", "BLOB_UPLOAD_UNKNOWN") for code, _ in registry_codes(resp))


def _body(source: BlobSource, progress: Callable[[int], None] | None = None) -> Body:
    if isinstance(source, bytes) and progress is None:
        return source

    def chunks() -> Iterator[bytes]:
        sent = 0
        with _opened(source) as reader:
            while chunk := reader.read(CHUNK):
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent)

    return chunks


@contextlib.contextmanager
def _opened(source: BlobSource) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        import io

        yield io.BytesIO(source)
    else:
        with source() as reader:
            yield reader


def _read_limited(resp: wire.Response, limit: int, what: str, *, host: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    try:
        for chunk in resp.iter_bytes():
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{host}: {what} is larger than {limit >> 20} MiB", hint="refused, as containerd does")
            parts.append(chunk)
    except wire.TransportError as exc:
        raise transport_error(exc, host=host, what=what) from None
    return b"".join(parts)


def _media_type(content_type: str, data: bytes) -> str:
    """The manifest's media type: the registry's Content-Type, else the document's own `mediaType`."""
    mt = content_type.split(";")[0].strip()
    if mt in MANIFEST_TYPES:
        return mt
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    own = value.get("mediaType") if isinstance(value, dict) else None
    if isinstance(own, str) and own:
        return own
    if isinstance(value, dict) and "manifests" in value:
        return OCI_INDEX
    return mt or OCI_MANIFEST
