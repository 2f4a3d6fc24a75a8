"""A corpus of malformed input for the command line: damaged and hostile archives, damaged stores, bad flags.

`World.make(base)` builds a small store with two images and good `docker save` / OCI archives of one;
`archive_cases`, `store_cases` and `flag_cases` derive the cases from them. A case is an argv (without
`--root`) plus which store it runs against. The corpus is also runnable as a script against any
checkout (`python tests/malformed/corpus.py` with PYTHONPATH pointing at it) to count the cases that
end in "internal error" or a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

BAD_MARKERS = ("internal error", "Traceback")


@dataclass(frozen=True)
class Case:
    """One malformed invocation: `argv` after `--root ROOT`; `root` is None for the world's good store."""

    group: str
    name: str
    argv: tuple[str, ...]
    root: Path | None = None
    damages_store: bool = False  # the case damages the store on purpose (no consistency check after)

    @property
    def id(self) -> str:
        return f"{self.group}:{self.name}"


@dataclass
class World:
    base: Path
    root: Path
    docker_tar: Path
    oci_tar: Path
    files: Path
    images: tuple[str, ...] = ("base:1", "other:2")
    counter: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def make(cls, base: Path, run: object) -> World:
        """`run(argv) -> (code, stderr)` runs the CLI (in-process or as a subprocess)."""
        base.mkdir(parents=True, exist_ok=True)
        files = base / "files"
        files.mkdir()
        root = base / "store"
        rootfs = files / "rootfs.tar"
        rootfs.write_bytes(_tar([_file("hello.txt", b"hello\n"), _dir("etc"), _file("etc/os-release", b"ID=t\n")]))
        world = cls(base, root, files / "good-docker.tar", files / "good-oci.tar", files)
        for argv in (["import", str(rootfs), "base:1"], ["tag", "base:1", "other:2"],
                     ["save", "base:1", "-o", str(world.docker_tar)],
                     ["save", "base:1", "--format", "oci", "-o", str(world.oci_tar)]):
            code, err = run(["--root", str(root), *argv])  # type: ignore[operator]
            if code != 0:
                raise RuntimeError(f"setting up the corpus: {argv} failed: {err}")
        return world

    def path(self, name: str) -> Path:
        self.counter[0] += 1
        return self.files / f"{self.counter[0]:03d}-{name}"

    def write(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.write_bytes(data)
        return path


# --- tar helpers -----------------------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes]


def _file(name: str, data: bytes, mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    return info, data


def _dir(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, b""


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def _tar(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def _read_tar(path: Path) -> list[Member]:
    members = []
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            members.append((info, data))
    return members


def _replace(members: list[Member], name: str, data: bytes) -> list[Member]:
    out = []
    for info, old in members:
        if info.name == name:
            info = tarfile.TarInfo(info.name)
            info.size, info.mode = len(data), 0o644
            old = data
        out.append((info, old))
    return out


def _plain(data: bytes) -> bytes:
    """The tar inside `data` if it is a readable gzip stream, else `data` itself."""
    try:
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error):
        return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Hostile layers: each escapes, or tries to, in its own way.
HOSTILE_LAYERS: dict[str, list[Member]] = {
    "dotdot": [_file("../escaped.txt", b"x")],
    "dotdot-deep": [_dir("a"), _file("a/../../escaped.txt", b"x")],
    "absolute": [_file("/etc/escaped.txt", b"x")],
    "symlink-then-write": [_link("s", "../../../../tmp"), _file("s/escaped.txt", b"x")],
    "symlink-absolute-then-write": [_link("s", "/tmp"), _file("s/escaped.txt", b"x")],
    "hardlink-dotdot": [_link("h", "../../../etc/passwd", tarfile.LNKTYPE)],
    "hardlink-absolute-missing": [_link("h", "/etc/shadow-nowhere", tarfile.LNKTYPE)],
    "root-replaced": [_file(".", b"x")],
}


def _huge_declared_layer() -> bytes:
    """A tar whose one entry declares a terabyte of content it does not have."""
    info = tarfile.TarInfo("big")
    info.size = 1 << 40
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    return header + b"\0" * 4096


def _oci_parts(world: World) -> tuple[dict, dict, dict, list[Member]]:
    members = _read_tar(world.oci_tar)
    blobs = {info.name: data for info, data in members}
    index = json.loads(blobs["index.json"])
    manifest = json.loads(blobs["blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]])
    config = json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    return index, manifest, config, members


def _oci_with(world: World, *, layers: list[bytes] | None = None, layer_media: str | None = None,
              manifest_media: str | None = None, index_media: str | None = None,
              config_edit: dict | None = None, manifest_raw: bytes | None = None,
              index_raw: bytes | None = None, layer_desc_edit: dict | None = None,
              drop_blob: str | None = None, extra: list[Member] | None = None) -> bytes:
    """A re-made OCI archive of the good image with the given parts replaced (digests kept consistent
    unless the point is that they are not)."""
    index, manifest, config, _ = _oci_parts(world)
    blobs: dict[str, bytes] = {}
    if layers is not None:
        descs = []
        diff_ids = []
        for data in layers:
            blobs[_sha(data)] = data
            plain = _plain(data)
            diff_ids.append("sha256:" + _sha(plain))
            descs.append({"mediaType": layer_media or "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": "sha256:" + _sha(data), "size": len(data), **(layer_desc_edit or {})})
        manifest["layers"] = descs
        config["rootfs"]["diff_ids"] = diff_ids
    else:
        for info, data in _read_tar(world.oci_tar):
            if info.name.startswith("blobs/sha256/"):
                blobs[info.name.rsplit("/", 1)[1]] = data
        if layer_media:
            for desc in manifest["layers"]:
                desc["mediaType"] = layer_media
        if layer_desc_edit:
            for desc in manifest["layers"]:
                desc.update(layer_desc_edit)
    config.update(config_edit or {})
    config_raw = json.dumps(config).encode()
    blobs[_sha(config_raw)] = config_raw
    manifest["config"] = {**manifest["config"], "digest": "sha256:" + _sha(config_raw), "size": len(config_raw)}
    if manifest_media:
        manifest["mediaType"] = manifest_media
    raw_manifest = manifest_raw if manifest_raw is not None else json.dumps(manifest).encode()
    blobs[_sha(raw_manifest)] = raw_manifest
    # Loaded images get their own tag, so that one the checks accept never moves the world's tags.
    annotations = {"org.opencontainers.image.ref.name": "loaded"}
    index["manifests"] = [{**index["manifests"][0], "annotations": annotations, "digest": "sha256:" + _sha(raw_manifest),
                           "size": len(raw_manifest), **({"mediaType": index_media} if index_media else {})}]
    raw_index = index_raw if index_raw is not None else json.dumps(index).encode()
    if drop_blob == "config":
        blobs.pop(_sha(config_raw))
    elif drop_blob == "manifest":
        blobs.pop(_sha(raw_manifest))
    elif drop_blob == "layer":
        blobs.pop(manifest["layers"][0]["digest"].split(":")[1])
    members = [_dir("blobs"), _dir("blobs/sha256")]
    members += [_file(f"blobs/sha256/{d}", data) for d, data in sorted(blobs.items())]
    members += [_file("index.json", raw_index), _file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')]
    return _tar(members + (extra or []))


def _docker_with(world: World, *, layer: bytes | None = None, manifest_raw: bytes | None = None,
                 config_raw: bytes | None = None, keep_diff_ids: bool = False) -> bytes:
    members = _read_tar(world.docker_tar)
    manifest = json.loads(dict((i.name, d) for i, d in members)["manifest.json"])
    entry = manifest[0]
    if manifest_raw is None:
        entry["RepoTags"] = ["loaded:1"]
        manifest_raw = json.dumps(manifest).encode()
    if layer is not None:
        name = entry["Layers"][0]
        members = _replace(members, name, layer)
        if not keep_diff_ids:
            config = json.loads(dict((i.name, d) for i, d in members)[entry["Config"]])
            plain = _plain(layer)
            config["rootfs"]["diff_ids"] = ["sha256:" + _sha(plain)]
            members = _replace(members, entry["Config"], json.dumps(config).encode())
    if config_raw is not None:
        members = _replace(members, entry["Config"], config_raw)
    if manifest_raw is not None:
        members = _replace(members, "manifest.json", manifest_raw)
    return _tar(members)


def archive_cases(world: World) -> list[Case]:
    cases: list[Case] = []

    def load(name: str, data: bytes) -> None:
        cases.append(Case("load", name, ("load", "-i", str(world.write(name + ".tar", data)))))

    def imp(name: str, data: bytes) -> None:
        cases.append(Case("import", name, ("import", str(world.write(name + ".tar", data)), f"imp-{name}:1")))

    docker = world.docker_tar.read_bytes()
    oci = world.oci_tar.read_bytes()
    for label, good in (("docker", docker), ("oci", oci)):
        # Truncations: inside the first header, at block boundaries, inside blobs, just before the end.
        size = len(good)
        offsets = sorted({0, 1, 100, 511, 512, 1024, 1536, size // 7, size // 5, size // 3, size // 2,
                          2 * size // 3, 4 * size // 5, size - 1536, size - 1024, size - 513, size - 1})
        for off in offsets:
            load(f"{label}-truncated-at-{off}", good[:off])
        for off in (0, 148, 156, 300, 512 + 100, size // 3, size // 2, 2 * size // 3, size - 1100):
            flipped = bytearray(good)
            flipped[off] ^= 0xFF
            load(f"{label}-flipped-at-{off}", bytes(flipped))
        whole = gzip.compress(good, mtime=0)
        load(f"{label}-gzip-whole-truncated", whole[: len(whole) // 2])
        load(f"{label}-zstd-whole-truncated", zstandard.ZstdCompressor().compress(good)[:-20])
        load(f"{label}-garbage-after-gzip-magic", b"\x1f\x8b\x08\x00" + b"\xff" * 4000)
    load("empty-file", b"")
    load("not-a-tar", b"hello, this is not an archive\n" * 40)
    load("tar-without-manifest", _tar([_file("README", b"x")]))

    # docker save format: wrong types and missing pieces in manifest.json, bad layers.
    for name, raw in {
        "manifest-is-object": b'{"Config": "x"}',
        "manifest-is-number": b"42",
        "manifest-entry-is-string": b'["x"]',
        "manifest-no-config": b'[{"Layers": []}]',
        "manifest-config-is-number": b'[{"Config": 3, "Layers": []}]',
        "manifest-layers-is-string": b'[{"Config": "c.json", "Layers": "abc"}]',
        "manifest-repotags-is-string": None,
        "manifest-missing-config-file": b'[{"Config": "missing.json", "Layers": []}]',
        "manifest-config-is-dir": None,
        "manifest-not-json": b"[{",
        "manifest-bad-tag": None,
    }.items():
        if raw is None:
            members = _read_tar(world.docker_tar)
            entry = json.loads(dict((i.name, d) for i, d in members)["manifest.json"])[0]
            if name == "manifest-repotags-is-string":
                entry["RepoTags"] = "base:1"
            elif name == "manifest-config-is-dir":
                entry["Config"] = entry["Layers"][0].split("/")[0]
            else:
                entry["RepoTags"] = ["Bad Tag!!:x y"]
            raw = json.dumps([entry]).encode()
        load(f"docker-{name}", _docker_with(world, manifest_raw=raw))
    for name, raw in {
        "config-not-json": b"{nope",
        "config-is-list": b"[]",
        "config-rootfs-missing": b'{"architecture": "amd64", "os": "linux"}',
        "config-diff-ids-wrong-type": b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", '
                                      b'"diff_ids": "sha256:00"}}',
        "config-diff-ids-mismatch": b'{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", '
                                    b'"diff_ids": ["sha256:' + b"0" * 64 + b'"]}}',
    }.items():
        load(f"docker-{name}", _docker_with(world, config_raw=raw))
    members = _read_tar(world.docker_tar)
    config_name = json.loads(dict((i.name, d) for i, d in members)["manifest.json"])[0]["Config"]
    config_data = dict((i.name, d) for i, d in members)[config_name]
    load("docker-config-not-its-digest", _tar(_replace(members, config_name, config_data.replace(b"linux", b"Linux"))))
    good_layer = _tar([_file("a.txt", b"a\n")])
    load("docker-layer-bad-gzip", _docker_with(world, layer=b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + b"\x13" * 300))
    load("docker-layer-truncated-gzip", _docker_with(world, layer=gzip.compress(good_layer, mtime=0)[:60],
                                                     keep_diff_ids=True))
    load("docker-layer-bad-zstd", _docker_with(world, layer=b"\x28\xb5\x2f\xfd" + b"\x00" * 40, keep_diff_ids=True))
    load("docker-layer-truncated-zstd",
         _docker_with(world, layer=zstandard.ZstdCompressor(write_checksum=True).compress(good_layer)[:30],
                      keep_diff_ids=True))
    load("docker-layer-content-changed", _docker_with(world, layer=good_layer, keep_diff_ids=True))
    load("docker-layer-truncated-tar", _docker_with(world, layer=good_layer[:700]))
    load("docker-layer-huge-declared-size", _docker_with(world, layer=_huge_declared_layer()))
    for name, members in HOSTILE_LAYERS.items():
        load(f"docker-layer-{name}", _docker_with(world, layer=_tar(members)))
        load(f"oci-layer-{name}", _oci_with(world, layers=[gzip.compress(_tar(members), mtime=0)]))
        imp(name, _tar(members))

    # OCI layout: media types, missing blobs, digests that lie, sizes that lie.
    MT = b'"mediaType": "application/vnd.oci.image.manifest.v1+json", '
    load("oci-index-not-json", _oci_with(world, index_raw=b"{"))
    load("oci-index-is-list", _oci_with(world, index_raw=b"[]"))
    load("oci-index-manifests-is-object", _oci_with(world, index_raw=b'{"manifests": {"a": 1}}'))
    load("oci-index-entry-no-digest", _oci_with(world, index_raw=b'{"manifests": [{' + MT + b'"size": 3}]}'))
    load("oci-index-entry-digest-is-number", _oci_with(world, index_raw=b'{"manifests": [{' + MT + b'"size": 3, "digest": 7}]}'))
    load("oci-index-digest-md5", _oci_with(world, index_raw=b'{"manifests": [{' + MT + b'"size": 3, "digest": "md5:abcd"}]}'))
    load("oci-index-digest-dotdot", _oci_with(world, index_raw=b'{"manifests": [{' + MT + b'"size": 3, "digest": "sha256:../../x"}]}'))
    load("oci-manifest-media-is-index",
         _oci_with(world, manifest_media="application/vnd.oci.image.index.v1+json",
                   index_media="application/vnd.oci.image.index.v1+json"))
    load("oci-manifest-media-unknown", _oci_with(world, index_media="application/x-nonsense"))
    load("oci-manifest-not-json", _oci_with(world, manifest_raw=b"{{"))
    load("oci-manifest-is-list", _oci_with(world, manifest_raw=b"[1, 2]"))
    load("oci-manifest-no-config", _oci_with(world, manifest_raw=b'{"schemaVersion": 2, "layers": []}'))
    load("oci-manifest-layers-is-string",
         _oci_with(world, manifest_raw=b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:'
                   + b"0" * 64 + b'", "size": 2}, "layers": "x"}'))
    load("oci-layer-media-unknown", _oci_with(world, layer_media="application/x-nonsense"))
    load("oci-layer-media-foreign", _oci_with(world, layer_media="application/vnd.oci.image.layer.nondistributable.v1.tar"))
    load("oci-config-os-is-number", _oci_with(world, config_edit={"os": 7}))
    load("oci-config-rootfs-is-string", _oci_with(world, config_edit={"rootfs": "layers"}))
    for part in ("config", "manifest", "layer"):
        load(f"oci-missing-{part}-blob", _oci_with(world, drop_blob=part))
    changed = gzip.compress(good_layer, mtime=0)
    load("oci-layer-size-lies", _oci_with(world, layers=[changed], layer_desc_edit={"size": 3}))
    load("oci-layer-size-huge", _oci_with(world, layers=[changed], layer_desc_edit={"size": 1 << 50}))
    load("oci-layer-size-negative", _oci_with(world, layers=[changed], layer_desc_edit={"size": -1}))
    load("oci-layer-digest-lies", _oci_with(world, layers=[changed],
                                            layer_desc_edit={"digest": "sha256:" + _sha(b"other")}))
    # A blob whose content does not hash to its name (same diff_id, so only the digest check sees it).
    members = _read_tar(world.oci_tar)
    _, manifest, _, _ = _oci_parts(world)
    layer_name = "blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]
    layer_data = dict((i.name, d) for i, d in members)[layer_name]
    regz = layer_data[:4] + b"\x01\x02\x03\x04" + layer_data[8:]  # another gzip mtime: same size and tar
    load("oci-blob-not-its-digest", _tar(_replace(members, layer_name, regz)))
    config_name = "blobs/sha256/" + manifest["config"]["digest"].split(":")[1]
    config_data = dict((i.name, d) for i, d in members)[config_name]
    load("oci-config-not-its-digest", _tar(_replace(members, config_name, config_data.replace(b"linux", b"Linux"))))
    load("oci-blob-is-symlink", _tar([(i, d) if i.name != layer_name else _link(layer_name, "/etc/passwd")
                                      for i, d in members]))
    load("oci-blob-is-hardlink", _tar([(i, d) if i.name != layer_name else
                                       _link(layer_name, "index.json", tarfile.LNKTYPE) for i, d in members]))
    load("oci-blob-links-out", _tar([(i, d) if i.name != layer_name else _link(layer_name, "../../../x")
                                     for i, d in members]))
    load("oci-blob-link-loop", _tar([(i, d) if i.name != layer_name else _link(layer_name, os.path.basename(layer_name))
                                     for i, d in members]))
    load("oci-blob-is-dir", _tar([(i, d) if i.name != layer_name else _dir(layer_name) for i, d in members]))

    # import: rootfs tarballs that are not usable ones.
    imp("truncated-header", _tar([_file("a", b"a" * 2000)])[:300])
    imp("truncated-content", _tar([_file("a", b"a" * 2000)])[:1200])
    imp("bad-gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + b"\x13" * 300)
    imp("truncated-gzip", gzip.compress(_tar([_file("a", b"a" * 5000)]), mtime=0)[:80])
    imp("bad-zstd", b"\x28\xb5\x2f\xfd" + b"\xff" * 40)
    imp("truncated-zstd", zstandard.ZstdCompressor(write_checksum=True).compress(_tar([_file("a", b"a" * 9000)]))[:40])
    imp("garbage", b"\x01\x02\x03" * 700)
    imp("bad-checksum", bytes(bytearray(_tar([_file("a", b"a")]))[:148] + b"9999999\0" + _tar([_file("a", b"a")])[156:]))
    imp("huge-declared-size", _huge_declared_layer())
    imp("bzip2", b"BZh91AY&SY" + b"\0" * 100)
    cases.append(Case("import", "missing-file", ("import", str(world.files / "nowhere.tar"), "imp:1")))
    cases.append(Case("import", "directory", ("import", str(world.files), "imp:1")))
    cases.append(Case("import", "bad-tag", ("import", str(world.files / "rootfs.tar"), "Bad Tag")))
    cases.append(Case("load", "missing-file", ("load", "-i", str(world.files / "nowhere.tar"))))
    cases.append(Case("load", "directory", ("load", "-i", str(world.files))))
    cases.append(Case("load", "dev-zero", ("load", "-i", "/dev/zero")))  # endless zeros: no decompressor loops

    # ADD of a local tar: the same checks as any other archive that arrives.
    for name in ("dotdot", "absolute", "hardlink-dotdot", "symlink-then-write"):
        ctx = world.path(f"ctx-add-{name}")
        ctx.mkdir()
        (ctx / "evil.tar").write_bytes(_tar(HOSTILE_LAYERS[name]))
        (ctx / "Dockerfile").write_text("FROM scratch\nADD evil.tar /\n")
        cases.append(Case("add", f"local-tar-{name}", ("build", "--progress", "quiet", str(ctx))))
    ctx = world.path("ctx-add-truncated")
    ctx.mkdir()
    (ctx / "bad.tar.gz").write_bytes(gzip.compress(_tar([_file("a", b"a" * 5000)]), mtime=0)[:80])
    (ctx / "Dockerfile").write_text("FROM scratch\nADD bad.tar.gz /\n")
    cases.append(Case("add", "local-tar-truncated-gzip", ("build", "--progress", "quiet", str(ctx))))
    return cases


# --- damaged stores --------------------------------------------------------------------------------

STORE_DAMAGE = ("index-truncated", "index-zeroed", "index-garbage", "index-directory", "index-header-only",
                "index-table-dropped", "blob-missing")
STORE_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("images",), ("images", "--json"), ("df",), ("fsck",), ("inspect", "base:1"), ("history", "base:1"),
    ("prune",), ("ps",), ("tag", "base:1", "x:1"), ("rmi", "other:2"), ("save", "base:1", "-o", "{files}/o.tar"),
    ("load", "-i", "{docker}"), ("bundle", "base:1", "{files}/bundle-{n}"),
)


def damage_store(world: World, damage: str) -> Path:
    """A copy of the world's store with `damage` done to it."""
    root = world.path(f"store-{damage}")
    shutil.copytree(world.root, root, symlinks=True)
    db = root / "index.db"
    for extra in ("index.db-wal", "index.db-shm"):
        (root / extra).unlink(missing_ok=True)
    if damage == "index-truncated":
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    elif damage == "index-zeroed":
        db.write_bytes(b"\0" * db.stat().st_size)
    elif damage == "index-garbage":
        db.write_bytes(os.urandom(4096 * 3))
    elif damage == "index-directory":
        db.unlink()
        db.mkdir()
    elif damage == "index-header-only":
        db.write_bytes(db.read_bytes()[:100])
    elif damage == "index-table-dropped":
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TABLE tags")
        conn.close()
    elif damage == "blob-missing":
        blobs = sorted(p for p in (root / "blobs").rglob("*") if p.is_file())
        for blob in blobs:
            blob.unlink()
    return root


def store_cases(world: World) -> list[Case]:
    cases = []
    for damage in STORE_DAMAGE:
        root = damage_store(world, damage)
        for n, command in enumerate(STORE_COMMANDS):
            argv = tuple(a.format(files=world.files, docker=world.docker_tar, n=f"{damage}-{n}") for a in command)
            cases.append(Case("store", f"{damage}:{' '.join(command[:2])}", argv, root=root, damages_store=True))
    return cases


# --- bad flags -------------------------------------------------------------------------------------

def flag_cases(world: World) -> list[Case]:
    f = world.files
    ctx = world.path("ctx")
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\n")
    (ctx / "a.txt").write_text("a\n")
    secret_ctx = world.path("ctx-secret")
    secret_ctx.mkdir()
    (secret_ctx / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /\n")
    add_url = world.path("ctx-url")
    add_url.mkdir()
    (add_url / "Dockerfile").write_text("FROM scratch\nADD http://[::1/x /x\n")
    add_url2 = world.path("ctx-url2")
    add_url2.mkdir()
    (add_url2 / "Dockerfile").write_text("FROM scratch\nADD http://host:99999/x /x\n")
    existing = world.write("existing-file", b"keep me\n")
    q = ("--progress", "quiet")
    table: list[tuple[str, tuple[str, ...]]] = [
        ("root-is-a-file", ("--root", str(existing), "images")),
        ("root-is-a-file-build", ("--root", str(existing), "build", *q, str(ctx))),
        ("root-under-a-file", ("--root", str(existing / "sub"), "df")),
        ("report-slash", ("build", *q, "--report", "/", str(ctx))),
        ("report-in-missing-dir", ("build", *q, "--report", str(f / "no" / "such" / "r.json"), str(ctx))),
        ("save-o-slash", ("save", "base:1", "-o", "/")),
        ("save-o-dir", ("save", "base:1", "-o", str(f))),
        ("save-o-under-a-file", ("save", "base:1", "-o", str(existing / "x.tar"))),
        ("save-o-missing-dir", ("save", "base:1", "-o", str(f / "no" / "such" / "x.tar"))),
        ("save-unknown-image", ("save", "nothere:1", "-o", str(f / "x.tar"))),
        ("save-bad-ref", ("save", "Bad Ref", "-o", str(f / "x.tar"))),
        ("bundle-onto-file", ("bundle", "base:1", str(existing))),
        ("bundle-unknown-image", ("bundle", "nothere:1", str(f / "b1"))),
        ("add-url-bad-ipv6", ("build", *q, str(add_url))),
        ("add-url-bad-port", ("build", *q, str(add_url2))),
        ("secret-missing-file", ("build", *q, "--secret", f"id=x,src={f}/nowhere", str(secret_ctx))),
        ("secret-directory", ("build", *q, "--secret", f"id=x,src={f}", str(secret_ctx))),
        ("secret-unknown-key", ("build", *q, "--secret", f"id=x,src={existing},color=red", str(secret_ctx))),
        ("secret-env", ("build", *q, "--secret", "id=x,env=HOME", str(secret_ctx))),
        ("secret-type-bogus", ("build", *q, "--secret", f"id=x,src={existing},type=ssh", str(secret_ctx))),
        ("secret-no-id", ("build", *q, "--secret", f"src={existing}", str(secret_ctx))),
        ("secret-empty-id", ("build", *q, "--secret", f"id=,src={existing}", str(secret_ctx))),
        ("secret-no-equals", ("build", *q, "--secret", "justtext", str(secret_ctx))),
        ("run-name-slash", ("run", "--rm", "--name", "a/b", "base:1", "true")),
        ("run-name-dotdot", ("run", "--rm", "--name", "../..", "base:1", "true")),
        ("run-name-empty", ("run", "--rm", "--name", "", "base:1", "true")),
        ("run-name-space", ("run", "--rm", "--name", "a b", "base:1", "true")),
        ("run-workdir-relative", ("run", "--rm", "-w", "relative", "base:1", "true")),
        ("run-memory-nonsense", ("run", "--rm", "--memory", "lots", "base:1", "true")),
        ("run-cpus-nonsense", ("run", "--rm", "--cpus", "-1", "base:1", "true")),
        ("run-pids-nonsense", ("run", "--rm", "--pids-limit", "x", "base:1", "true")),
        ("run-unknown-image", ("run", "--rm", "nothere:1", "true")),
        ("run-bad-env", ("run", "--rm", "-e", "=x", "base:1", "true")),
        ("run-bad-volume", ("run", "--rm", "-v", "nocolon", "base:1", "true")),
        ("run-volume-relative-dst", ("run", "--rm", "-v", f"{f}:relative", "base:1", "true")),
        ("run-volume-missing-src", ("run", "--rm", "-v", f"{f}/nowhere:/x", "base:1", "true")),
        ("run-volume-bad-mode", ("run", "--rm", "-v", f"{f}:/x:bogus", "base:1", "true")),
        ("build-context-named-no-equals", ("build", *q, "--build-context", "foo", str(ctx))),
        ("build-context-named-missing-dir", ("build", *q, "--build-context", f"foo={f}/nowhere", str(ctx))),
        ("build-context-named-file", ("build", *q, "--build-context", f"foo={existing}", str(ctx))),
        ("build-context-named-url", ("build", *q, "--build-context", "foo=https://127.0.0.1/x.tar", str(ctx))),
        ("build-context-named-bad-image", ("build", *q, "--build-context", "foo=docker-image://Bad Ref", str(ctx))),
        ("build-context-named-bad-name", ("build", *q, "--build-context", f"Bad Name={f}", str(ctx))),
        ("ssh-missing-file", ("build", *q, "--ssh", f"default={f}/nowhere", str(ctx))),
        ("ssh-directory", ("build", *q, "--ssh", f"default={f}", str(ctx))),
        ("ssh-empty-paths", ("build", *q, "--ssh", "default=", str(ctx))),
        ("build-missing-context", ("build", *q, str(f / "nowhere"))),
        ("build-context-is-file", ("build", *q, str(existing))),
        ("build-missing-dockerfile", ("build", *q, "-f", str(f / "nowhere"), str(ctx))),
        ("build-dockerfile-is-dir", ("build", *q, "-f", str(f), str(ctx))),
        ("build-bad-tag", ("build", *q, "-t", "Bad Tag", str(ctx))),
        ("build-bad-output-type", ("build", *q, "--output", "type=bogus,dest=x", str(ctx))),
        ("build-output-no-dest", ("build", *q, "--output", "type=local", str(ctx))),
        ("build-output-tar-slash", ("build", *q, "--output", "type=tar,dest=/", str(ctx))),
        ("build-output-oci-dir", ("build", *q, "--output", f"type=oci,dest={f}", str(ctx))),
        ("build-output-local-onto-file", ("build", *q, "--output", f"type=local,dest={existing}", str(ctx))),
        ("build-unknown-target", ("build", *q, "--target", "nope", str(ctx))),
        ("build-jobs-negative", ("build", *q, "--jobs", "-3", str(ctx))),
        ("build-no-cache-filter-unknown", ("build", *q, "--no-cache-filter", "nope", str(ctx))),
        ("parse-missing", ("parse", str(f / "nowhere"))),
        ("parse-directory", ("parse", str(f))),
        ("tag-unknown", ("tag", "nothere:1", "x:1")),
        ("tag-bad-target", ("tag", "base:1", "Bad Tag")),
        ("tag-bad-source", ("tag", "::", "x:1")),
        ("tag-uppercase", ("tag", "base:1", "UPPER:1")),
        ("tag-two-colons", ("tag", "base:1", "a:b:c")),
        ("tag-double-slash", ("tag", "base:1", "a//b")),
        ("rmi-unknown", ("rmi", "nothere:1")),
        ("rmi-bad-ref", ("rmi", "Bad Ref")),
        ("inspect-unknown", ("inspect", "nothere:1")),
        ("inspect-bad-digest", ("inspect", "sha256:zz")),
        ("history-unknown", ("history", "nothere:1")),
        ("logs-unknown", ("logs", "nothere")),
        ("stop-unknown", ("stop", "nothere")),
        ("stop-negative-time", ("stop", "-t", "-5", "nothere")),
        ("rm-unknown", ("rm", "nothere")),
        ("rm-dotdot", ("rm", "../..")),
        ("logs-dotdot", ("logs", "../..")),
        ("prune-bad-size", ("prune", "--keep-storage", "lots")),
        ("prune-negative-size", ("prune", "--keep-storage", "-5GB")),
        ("save-bad-format", ("save", "base:1", "--format", "zip", "-o", str(f / "x.tar"))),
        ("load-no-input", ("load",)),
        ("import-stdin-empty", ("import", "-", "imp-stdin:1")),
    ]
    return [Case("flags", name, argv) for name, argv in table]


def all_cases(world: World) -> list[Case]:
    return archive_cases(world) + store_cases(world) + flag_cases(world)


def argv_of(world: World, case: Case) -> list[str]:
    if case.argv[:1] == ("--root",):
        return list(case.argv)
    return ["--root", str(case.root or world.root), *case.argv]


# --- as a script: count the cases that crash, with the layerbuild on PYTHONPATH ---------------------

def _subprocess_runner(argv: list[str], stdin: bytes = b"") -> tuple[int, str]:
    import subprocess

    try:
        proc = subprocess.run([sys.executable, "-m", "layerbuild", *argv], input=stdin, capture_output=True,
                              timeout=60, env={**os.environ, "LAYERBUILD_DEBUG": ""})
    except subprocess.TimeoutExpired:
        return -1, "internal error: hung (no answer in 60 s)"
    return proc.returncode, proc.stderr.decode(errors="replace")


def main() -> int:
    import tempfile
    from collections import Counter

    with tempfile.TemporaryDirectory() as tmp:
        world = World.make(Path(tmp) / "w", _subprocess_runner)
        cases = all_cases(world)
        bad: Counter[str] = Counter()
        zero = 0
        for case in cases:
            code, err = _subprocess_runner(argv_of(world, case))
            crashed = any(marker in err for marker in BAD_MARKERS)
            if crashed:
                bad[case.group] += 1
                kind = err.split("internal error: ", 1)[-1].split(":", 1)[0] if "internal error" in err else "traceback"
                print(f"CRASH {case.id}: {kind}: {err.strip().splitlines()[0][:160]}")
            elif code == 0:
                zero += 1
                print(f"ACCEPTED {case.id}")
            elif "-v" in sys.argv:
                print(f"REFUSED {case.id}: {code}: {' | '.join(err.strip().splitlines())[:300]}")
        groups = Counter(c.group for c in cases)
        print(f"{len(cases)} cases; crashed: {sum(bad.values())} "
              f"({', '.join(f'{g} {bad[g]}/{n}' for g, n in groups.items())}); accepted (exit 0): {zero}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
