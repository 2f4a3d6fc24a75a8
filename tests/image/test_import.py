"""Ingesting tar streams as zstd layers, `import` of a rootfs tarball as a tagged image, and tag names."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest
import zstandard

from layerbuild.errors import DigestMismatchError, UnsafeArchiveError, UsageError
from layerbuild.image import import_rootfs
from layerbuild.layer.compression import sniff_compression
from layerbuild.layer.ingest import ingest_layer
from layerbuild.platforms import host_arch
from layerbuild.reference import familiar, normalize_tag, split_digest_ref, split_tag
from layerbuild.store import MEDIA_LAYER_ZSTD, Store


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("etc/os-release", b"ID=toy\n"), ("bin/sh", b"\x7fELF" + bytes(5000))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


TAR = _rootfs_tar()
DIFF_ID = "sha256:" + hashlib.sha256(TAR).hexdigest()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda b: b,
        lambda b: gzip.compress(b, mtime=0),
        lambda b: zstandard.ZstdCompressor().compress(b),
    ],
    ids=["plain", "gzip", "zstd"],
)
def test_ingest_any_compression_gives_the_same_layer(store: Store, wrap) -> None:  # type: ignore[no-untyped-def]
    layer = ingest_layer(store, io.BytesIO(wrap(TAR)))
    assert layer.diff_id == DIFF_ID
    assert layer.diff_size == len(TAR)
    assert layer.media_type == MEDIA_LAYER_ZSTD
    stored = store.blobs.read(layer.digest)
    assert len(stored) == layer.size
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read() == TAR
    assert store.index.layers_by_diff_id(DIFF_ID) == (layer,)


def test_truncated_gzip_is_refused_and_leaves_nothing(store: Store) -> None:
    data = gzip.compress(TAR)[:-20]
    with pytest.raises(UnsafeArchiveError, match="compressed stream"):
        ingest_layer(store, io.BytesIO(data))
    assert list(store.blobs.list()) == []


@pytest.mark.parametrize("where", [-8, -1], ids=["crc", "length"])
def test_a_gzip_whose_trailer_does_not_match_is_refused(store: Store, where: int) -> None:
    """The tar inside is intact; gzip's CRC-32 or length trailer is wrong: refused, nothing kept."""
    data = bytearray(gzip.compress(TAR, mtime=0))
    data[where] ^= 1
    with pytest.raises(UnsafeArchiveError, match="compressed stream"):
        ingest_layer(store, io.BytesIO(bytes(data)))
    assert list(store.blobs.list()) == []


class _SelfChecking(io.BytesIO):
    """A blob reader that checks its own digest when it reaches its end, as a registry's does."""

    def __init__(self, data: bytes, *, lie: bool) -> None:
        super().__init__(data)
        self.lie = lie
        self.ended = False

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        if not data:
            self.ended = True
            if self.lie:
                raise DigestMismatchError("the blob hashes to something else")
        return data


@pytest.mark.parametrize("wrap", [lambda b: b, lambda b: gzip.compress(b, mtime=0)], ids=["plain", "gzip"])
def test_a_source_that_checks_its_digest_is_read_to_its_end(store: Store, wrap) -> None:  # type: ignore[no-untyped-def]
    blob = wrap(TAR)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    bad = _SelfChecking(blob, lie=True)
    with pytest.raises(DigestMismatchError):
        ingest_layer(store, bad, expected_digest=digest, expected_size=len(blob), expected_diff_id=DIFF_ID,
                     source_checks_digest=True)
    assert list(store.blobs.list()) == [] and store.index.layers_by_diff_id(DIFF_ID) == ()
    good = _SelfChecking(blob, lie=False)
    layer = ingest_layer(store, good, expected_digest=digest, expected_size=len(blob), expected_diff_id=DIFF_ID,
                         source_checks_digest=True)
    assert good.ended and layer.diff_id == DIFF_ID
    # Without the flag the digest is checked here: a wrong one is refused whatever the source says.
    with pytest.raises(DigestMismatchError, match="hashes to"):
        ingest_layer(store, io.BytesIO(blob), expected_digest="sha256:" + "0" * 64, expected_diff_id=DIFF_ID)


def test_import_rootfs_makes_a_tagged_image(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    result = import_rootfs(store, io.BytesIO(TAR), "toy", architecture="amd64")
    assert result.tag == "toy:latest"
    assert store.index.get_tag("toy:latest") is not None
    manifest = json.loads(store.blobs.read(result.manifest))
    assert manifest["config"]["digest"] == result.config
    assert manifest["layers"][0]["digest"] == result.layer.digest
    config = json.loads(store.blobs.read(result.config))
    assert config["rootfs"]["diff_ids"] == [DIFF_ID]
    assert config["created"] == "1970-01-01T00:00:00Z"
    # Same input, same epoch: the same image, byte for byte.
    assert import_rootfs(store, io.BytesIO(TAR), "toy:2", architecture="amd64").manifest == result.manifest
    assert store.prune(all=True, grace=0).blobs == ()
    assert store.fsck().ok


def test_import_writes_the_same_bytes_as_before(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The config and manifest now come from the image package; the digests must not have moved."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    result = import_rootfs(store, io.BytesIO(TAR), "toy", architecture="amd64")
    assert store.blobs.read(result.config) == (
        b'{"architecture":"amd64","config":{},"created":"1970-01-01T00:00:00Z","history":[{"created":'
        b'"1970-01-01T00:00:00Z","created_by":"layerbuild import"}],"os":"linux","rootfs":{"diff_ids":'
        b'["' + DIFF_ID.encode() + b'"],"type":"layers"}}'
    )
    assert result.config == "sha256:dc8c7512f7675a1bfd0a9ec75844627ad14ecadc4ccdc57384b9d63b3f140e3c"
    # The manifest names the layer's zstd blob: it moved once, when the store's zstd level went from 3
    # to 1 (`layer.frames.ZSTD_LEVEL`); the config, which names the tar's diff_id, did not.
    assert result.manifest == "sha256:68999df74e3bcfcc8fe6b58460ceaebd5d19fa39793f043f67868e89c83eae78"
    manifest = store.index.get_image(result.manifest)
    assert manifest is not None and set(manifest.refs) == {result.config, result.layer.digest}


def test_import_defaults_to_the_host_architecture(store: Store) -> None:
    result = import_rootfs(store, io.BytesIO(TAR), "toy")
    assert json.loads(store.blobs.read(result.config))["architecture"] == host_arch()


def test_a_bad_name_is_refused_before_anything_is_stored(store: Store) -> None:
    with pytest.raises(UsageError):
        import_rootfs(store, io.BytesIO(TAR), "bad name")
    assert list(store.blobs.list()) == []


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"BZh91AY", "bzip2"),
        (b"\xfd7zXZ\x00\x00", "xz"),
        (b"etc/", "tar"),
        (b"", "tar"),
    ],
)
def test_sniff_compression(head: bytes, fmt: str) -> None:
    assert sniff_compression(head) == fmt


def test_a_bzip2_looking_tar_is_still_taken_as_plain(store: Store) -> None:
    """Layers are gzip, zstd or plain; any other magic is read as a plain tar, as before."""
    member = tarfile.TarInfo("BZh")  # a tar whose first name makes it look like bzip2
    data = member.tobuf() + bytes(1024)
    assert ingest_layer(store, io.BytesIO(data)).diff_size == len(data)
    with pytest.raises(UnsafeArchiveError, match="malformed tar header"):  # read as a tar, not as bzip2
        ingest_layer(store, io.BytesIO(b"BZh" + bytes(509)))


@pytest.mark.parametrize(
    ("ref", "tag"),
    [
        ("app", "app:latest"),
        ("app:1", "app:1"),
        ("host:5000/app", "host:5000/app:latest"),
        ("a/b:c", "a/b:c"),
    ],
)
def test_normalize_tag(ref: str, tag: str) -> None:
    assert normalize_tag(ref) == tag
    assert ":".join(split_tag(ref)) == tag


def test_split_digest_ref() -> None:
    assert split_digest_ref("app@sha256:00") == ("app", "sha256:00")
    assert split_digest_ref("app:1") is None


@pytest.mark.parametrize("ref", ["", "has space", "app@sha256:00"])
def test_bad_tag(ref: str) -> None:
    with pytest.raises(UsageError):
        normalize_tag(ref)


@pytest.mark.parametrize(
    ("name", "shown"),
    [("docker.io/library/a:1", "a:1"), ("index.docker.io/u/a", "u/a"), ("quay.io/x/y:2", "quay.io/x/y:2")],
)
def test_familiar_names(name: str, shown: str) -> None:
    assert familiar(name) == shown


@pytest.mark.parametrize(("ref", "message"), [
    ("UPPER:1", "repository name must be lowercase"),
    ("team/App", "repository name must be lowercase"),
    # Docker 20.10's daemon and docker 28's CLI: `docker tag IMG UPPER/x:1` and `docker load` of an
    # archive tagged so both answer "invalid reference format: repository name must be lowercase".
    ("UPPER/x:1", "repository name must be lowercase"),
    ("a:b:c", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("-a", "invalid reference format"),
    ("a:.tag", "tag '.tag'"),
    ("a:" + "t" * 129, "invalid reference format"),
    ("bad_host!:5000/a", "invalid reference format"),
])
def test_names_docker_refuses_are_refused(ref: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        normalize_tag(ref)


@pytest.mark.parametrize("ref", ["localhost/x:1", "Registry.Example:5000/team/app:v1.0-rc_1", "a__b-c/d.e:1",
                                 "UPPER.com/x:latest"])
def test_names_docker_takes_are_taken(ref: str) -> None:
    assert normalize_tag(ref) == ref


class _Dribble(io.RawIOBase):
    """A source whose reads return at most `most` bytes (a socket's or a pipe's right), with or
    without readinto: the door must not take a short read for the end or for a format."""

    def __init__(self, data: bytes, most: int, *, into: bool) -> None:
        self._src = io.BytesIO(data)
        self._most = most
        if not into:
            self.readinto = None  # type: ignore[assignment,method-assign]

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        return self._src.read(self._most if n is None or n < 0 else min(n, self._most))

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("into", [True, False], ids=["readinto", "read"])
@pytest.mark.parametrize("most", [1, 3, 700])
@pytest.mark.parametrize("wrap,media", [(lambda b: b, "tar"), (lambda b: gzip.compress(b, mtime=0), "gzip"),
                                        (lambda b: zstandard.ZstdCompressor().compress(b), "zstd")],
                         ids=["plain", "gzip", "zstd"])
def test_short_reads_give_the_same_kept_layer(store: Store, wrap, media, most: int, into: bool) -> None:  # type: ignore[no-untyped-def]
    blob = wrap(TAR)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    layer = ingest_layer(store, _Dribble(blob, most, into=into), keep=True,  # type: ignore[arg-type]
                         expected_digest=digest, expected_size=len(blob), expected_diff_id=DIFF_ID)
    assert (layer.digest, layer.diff_id, layer.size) == (digest, DIFF_ID, len(blob))
    assert layer.media_type.endswith({"tar": ".tar", "gzip": "+gzip", "zstd": "+zstd"}[media])
    assert store.blobs.read(layer.digest) == blob
