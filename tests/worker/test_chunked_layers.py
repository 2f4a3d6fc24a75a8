"""COPY layers kept as recipes: an edit writes only its new frames, and the blob a reader gets, its
digest and its diff_id are those of the same tree written in one piece; fsck and prune know recipes."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

from layerbuild.layer.frames import HARD_GROUP
from layerbuild.layer.mapped import MappedEntry, write_mapped
from layerbuild.layer.sink import LayerInfo
from layerbuild.layer.tarformat import Kind
from layerbuild.solve import Output
from layerbuild.store import Store, chunks
from layerbuild.worker.ops import BuildServices


def make_tree(root: Path, files: int = 600, size: int = 6000) -> None:
    for i in range(files):
        path = root / f"d{i % 5}" / f"f{i:04}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size // 2).hex().encode())  # poorly compressible: many frames


def entries(root: Path) -> list[MappedEntry]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        if path.is_dir():
            out.append(MappedEntry(rel, Kind.DIR, mode=0o755, mtime=0))
        else:
            key = hashlib.sha256(path.read_bytes()).hexdigest()  # as the context's fingerprint stands for it
            out.append(MappedEntry(rel, Kind.FILE, mode=0o644, mtime=0, source=str(path), size=path.stat().st_size,
                                   content_key=key))
    return out


def services(store: Store) -> BuildServices:
    return BuildServices(store, None, lambda state: ())  # type: ignore[arg-type]


def build(svc: BuildServices, root: Path, previous: Output | None = None) -> tuple[Output, dict[str, Any]]:
    """The COPY step's write (as CopyTask does it): reusing `previous`'s frames, only new ones written."""
    got: dict[str, Any] = {}

    def write(out: Any) -> LayerInfo:
        info = write_mapped(entries(root), out, reuse=svc.reuse_from(previous), pack_only=True)
        got["info"] = info
        return info

    return svc.store_layer(write, frames=True), got


def whole(root: Path) -> tuple[LayerInfo, bytes]:
    """The layer of `root` written in one piece, without reuse: the reference."""
    buf = io.BytesIO()
    info = write_mapped(entries(root), buf)
    return info, buf.getvalue()


def read_blob(store: Store, digest: str) -> bytes:
    with store.reading_blob(digest) as f:
        return f.read()


def edit(root: Path, name: str = "d2/f0152.txt") -> None:
    with open(root / name, "ab") as f:
        f.write(b"edited\n")


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Store, BuildServices, Path, Output, Output, dict[str, Any]]:
    store = Store(tmp_path / "root")
    svc = services(store)
    root = tmp_path / "ctx"
    make_tree(root)
    first, _ = build(svc, root)
    edit(root)
    second, got = build(svc, root, first)
    return store, svc, root, first, second, got


def test_an_edit_writes_only_the_frames_it_changed(two_versions: Any) -> None:
    store, _, _, first, second, got = two_versions
    info: LayerInfo = got["info"]
    old = store.blobs.recipe(first.extra["blob"])
    new = store.blobs.recipe(second.extra["blob"])
    assert old is not None and new is not None and len(old.frames) > 8
    assert old.self_contained and not new.self_contained
    written = [f for f in new.frames if f.pack != first.extra["blob"]]
    assert 1 <= len(written) <= 2  # the edited group (and at most its neighbour)
    assert info.reused == len(new.frames) - len(written)
    pack = written[0].pack
    assert store.blobs.stat(pack).size == sum(f.size for f in written)  # nothing else was written


def test_the_recipe_blob_is_the_one_piece_blob(two_versions: Any) -> None:
    store, _, root, _, second, _ = two_versions
    fresh, data = whole(root)
    assert second.diff_id == fresh.diff_id
    assert second.extra["blob"] == fresh.digest
    blob = read_blob(store, fresh.digest)
    assert blob == data
    assert store.blobs.stat(fresh.digest).size == len(data)
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == second.diff_id


def test_edits_on_edits_keep_digests_exact(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    svc = services(store)
    root = tmp_path / "ctx"
    make_tree(root)
    out, _ = build(svc, root)
    for name in ("d0/f0000.txt", "d4/f0299.txt", "d1/f0101.txt", "d1/f0101.txt"):
        edit(root, name)
        out, got = build(svc, root, out)
        fresh, data = whole(root)
        assert (out.diff_id, out.extra["blob"]) == (fresh.diff_id, fresh.digest)
        assert read_blob(store, fresh.digest) == data
    (root / "d3" / "new.txt").write_bytes(b"a new file")  # an entry more, and one fewer
    os.unlink(root / "d0" / "f0005.txt")
    out, _ = build(svc, root, out)
    fresh, data = whole(root)
    assert (out.diff_id, out.extra["blob"]) == (fresh.diff_id, fresh.digest)
    again, got = build(svc, root, out)  # nothing changed: every frame taken, nothing hashed
    assert (again.diff_id, again.extra["blob"]) == (fresh.diff_id, fresh.digest)
    assert got["info"].reused == len(got["info"].frames)
    assert store.fsck().ok


def test_fsck_finds_a_damaged_frame(two_versions: Any) -> None:
    store, _, _, first, second, _ = two_versions
    pack = store.blobs.path(first.extra["blob"])
    os.chmod(pack, 0o644)
    with open(pack, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    report = store.fsck()
    kinds = {(p.kind, p.subject) for p in report.problems}
    assert ("corrupt blob", first.extra["blob"]) in kinds
    assert ("missing frames", second.extra["blob"]) in kinds  # its pack was quarantined
    assert store.blobs.stat(second.extra["blob"]) is None
    assert store.index.get_layer(second.extra["blob"]) is None  # the row went with it
    assert store.fsck().ok


def test_fsck_finds_a_missing_frame(two_versions: Any) -> None:
    store, _, _, first, second, _ = two_versions
    new = store.blobs.recipe(second.extra["blob"])
    written = next(f.pack for f in new.frames if f.pack != first.extra["blob"])
    os.unlink(store.blobs.path(written))
    report = store.fsck(repair=False)
    assert [(p.kind, p.subject) for p in report.problems] == [("missing frames", second.extra["blob"])]
    with pytest.raises(chunks.RecipeError):
        read_blob(store, second.extra["blob"])
    store.fsck()  # repaired: the recipe quarantined, the layer's row dropped
    assert store.fsck().ok


def test_fsck_finds_a_recipe_whose_frames_hash_wrong(two_versions: Any) -> None:
    store, _, _, _first, second, _ = two_versions
    recipe = store.blobs.recipe(second.extra["blob"])
    frames = list(recipe.frames)
    frames[0], frames[1] = frames[1], frames[0]  # the right frames in the wrong order
    liar = chunks.Recipe(recipe.digest, recipe.diff_id, recipe.size, recipe.diff_size, recipe.media_type,
                         tuple(frames), recipe.end_tar_state, recipe.end_blob_state)
    path = chunks.recipe_path(store.layout, recipe.digest)
    os.unlink(path)
    chunks.write_recipe(store.layout, liar)
    report = store.fsck()
    assert ("corrupt recipe", recipe.digest) in {(p.kind, p.subject) for p in report.problems}
    assert not path.exists()


def test_a_damaged_recipe_is_never_trusted(two_versions: Any) -> None:
    store, svc, root, _first, second, _ = two_versions
    path = chunks.recipe_path(store.layout, second.extra["blob"])
    data = bytearray(path.read_bytes())
    at = data.index(b'"end":["') + 10  # a digit of the saved tar state: still valid JSON
    data[at] = ord("0") if data[at] != ord("0") else ord("1")
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    assert store.blobs.recipe(second.extra["blob"]) is None
    assert svc.reuse_from(second) is None  # the next edit starts from scratch, not from bad states
    assert ("corrupt recipe", second.extra["blob"]) in {(p.kind, p.subject) for p in store.fsck().problems}
    edit(root)
    third, _ = build(svc, root, second)
    fresh, _ = whole(root)
    assert (third.diff_id, third.extra["blob"]) == (fresh.diff_id, fresh.digest)


def test_prune_keeps_the_frames_a_recipe_names(two_versions: Any) -> None:
    store, _, root, first, second, _ = two_versions
    lease = store.lease()
    lease.add(second.extra["blob"], str(second.diff_id))  # only the new layer is held
    report = store.prune(grace=0)
    assert first.extra["blob"] not in report.blobs  # its layer is unreferenced, but it holds frames
    assert store.blobs.stat(first.extra["blob"]) is not None
    _fresh, data = whole(root)
    assert read_blob(store, second.extra["blob"]) == data
    assert store.fsck().ok
    lease.release()
    report = store.prune(all=True, grace=0)
    assert second.extra["blob"] in report.blobs and first.extra["blob"] in report.blobs
    assert list(chunks.recipe_digests(store.layout)) == []
    assert list(store.blobs.list()) == []


def test_df_counts_a_recipe_once(two_versions: Any) -> None:
    store, _, _, _, _second, _ = two_versions
    total = sum(p.stat().st_size for p in store.layout.blobs.iterdir())
    total += sum(os.stat(p).st_size for p in store.layout.recipes.iterdir())
    df = store.df()
    blob_rows = sum(e.size for e in df.entries if e.kind in ("layers", "configs", "manifests", "other blobs"))
    assert blob_rows == total
    assert next(e for e in df.entries if e.kind == "other blobs").count == 0  # packs count as layers


def test_a_crash_between_frames_and_recipe_leaves_a_consistent_store(tmp_path: Path, monkeypatch: Any) -> None:
    store = Store(tmp_path / "root")
    svc = services(store)
    root = tmp_path / "ctx"
    make_tree(root)
    first, _ = build(svc, root)
    edit(root)

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(chunks, "write_recipe", crash)
    with pytest.raises(KeyboardInterrupt):
        build(svc, root, first)
    monkeypatch.undo()
    fresh, data = whole(root)
    assert store.blobs.stat(fresh.digest) is None  # the new layer is not there at all...
    assert store.index.get_layer(fresh.digest) is None
    assert store.fsck().ok  # ...its pack is a valid, unreferenced blob
    again, _ = build(svc, root, first)  # and the next build makes it
    assert read_blob(store, again.extra["blob"]) == data
    lease = store.lease()
    lease.add(again.extra["blob"], str(again.diff_id))
    store.prune(grace=0)  # the orphan pack of the crashed write goes, what the layer needs stays
    assert read_blob(store, again.extra["blob"]) == data
    assert store.fsck().ok


def test_a_recipe_is_refused_when_its_pack_is_gone(two_versions: Any) -> None:
    store, _, _, first, second, _ = two_versions
    recipe = store.blobs.recipe(second.extra["blob"])
    os.unlink(chunks.recipe_path(store.layout, recipe.digest))
    os.unlink(store.blobs.path(first.extra["blob"]))
    with pytest.raises(chunks.RecipeError, match="missing"):
        chunks.write_recipe(store.layout, recipe)
    assert not chunks.recipe_path(store.layout, recipe.digest).exists()
    assert list(store.layout.tmp.iterdir()) == []
    store.fsck()
    assert store.fsck().ok


def _archive_blobs(path: Path) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                out[m.name] = f.read()
        return out


def test_a_rebuilt_copy_saves_the_same_layers_as_a_cold_build(tmp_path: Path) -> None:
    from layerbuild.cli.main import main
    from layerbuild.image.archive import save
    from layerbuild.image.store_io import resolve_image
    from layerbuild.image.storeimage import store_image

    ctx = tmp_path / "ctx"
    make_tree(ctx / "data")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY data/ /data/\n")
    warm, cold = tmp_path / "warm", tmp_path / "cold"
    assert main(["--root", str(warm), "build", "-q", "-t", "x", str(ctx)]) == 0
    edit(ctx / "data")
    assert main(["--root", str(warm), "build", "-q", "-t", "x", str(ctx)]) == 0
    assert main(["--root", str(cold), "build", "-q", "-t", "x", str(ctx)]) == 0
    with Store(warm) as a, Store(cold) as b:
        ia, ib = store_image(a, "x"), store_image(b, "x")
        assert ia.config.diff_ids == ib.config.diff_ids
        (la,), (lb,) = ia.layers, ib.layers
        assert (la.digest, la.size) == (lb.digest, lb.size)
        recipe = a.blobs.recipe(la.digest)
        assert recipe is not None and not recipe.self_contained  # the warm store kept it as a recipe
        with la.compressed() as fa, lb.compressed() as fb:
            assert fa.read() == fb.read()
        assert store_image(a, "x", compression="gzip").layers[0].digest == \
            store_image(b, "x", compression="gzip").layers[0].digest  # what a push sends
        for fmt, compression in (("oci", "zstd"), ("oci", "gzip"), ("docker", "gzip")):
            save(a, resolve_image(a, "x"), tmp_path / "a.tar", fmt, compression=compression)
            save(b, resolve_image(b, "x"), tmp_path / "b.tar", fmt, compression=compression)
            blobs_a, blobs_b = _archive_blobs(tmp_path / "a.tar"), _archive_blobs(tmp_path / "b.tar")
            layer_a = {k: v for k, v in blobs_a.items() if len(v) > 100_000}
            assert layer_a and layer_a == {k: v for k, v in blobs_b.items() if len(v) > 100_000}
        assert a.fsck().ok


def test_a_layer_whose_tar_is_not_its_diff_id_never_leaves_as_gzip(two_versions: Any) -> None:
    from layerbuild.image.storeimage import gzip_variant
    from layerbuild.store.blobs import CorruptBlobError

    store, _, _, _, second, _ = two_versions
    real = store.index.get_layer(second.extra["blob"])
    wrong = real.__class__(**{**real.__dict__, "diff_id": "sha256:" + "0" * 64})
    before = set(store.blobs.list())
    with pytest.raises(CorruptBlobError, match="its tar hashes to"):
        gzip_variant(store, wrong)
    assert set(store.blobs.list()) == before  # no gzip blob made
    assert gzip_variant(store, real).diff_id == second.diff_id


def test_unchanged_groups_are_skipped_unread_and_big_files_split_exactly(tmp_path: Path, monkeypatch: Any) -> None:
    from layerbuild.layer import mapped

    store = Store(tmp_path / "root")
    svc = services(store)
    root = tmp_path / "ctx"
    make_tree(root)
    (root / "d2" / "big.bin").write_bytes(os.urandom(19 << 20))  # cut inside, at exact HARD_GROUP marks
    out, _ = build(svc, root)
    reads: list[tuple[str, int]] = []
    real = mapped._copy_file

    def counting(entry: MappedEntry, *args: Any) -> None:
        reads.append((entry.path, args[1]))
        real(entry, *args)

    monkeypatch.setattr(mapped, "_copy_file", counting)
    edit(root, "d4/f0599.txt")  # near the end of the stream
    out, _ = build(svc, root, out)
    assert reads and all(path.startswith("/d4/") for path, _ in reads)  # d0..d3 were never read
    fresh, data = whole(root)
    assert (out.diff_id, out.extra["blob"]) == (fresh.diff_id, fresh.digest)
    assert read_blob(store, fresh.digest) == data
    reads.clear()
    with open(root / "d2" / "big.bin", "r+b") as f:  # same size, new bytes in its second piece
        f.seek(10 << 20)
        f.write(b"changed")
    out, _ = build(svc, root, out)
    # Its content key changed: every group holding a piece of it is read (from each piece's offset),
    # the groups before it are not.
    big = [offset for path, offset in reads if path == "/d2/big.bin"]
    assert len(big) >= (19 << 20) // HARD_GROUP and big[0] == 0 and 0 < big[1] <= HARD_GROUP
    assert all(b - a == HARD_GROUP for a, b in itertools.pairwise(big[1:]))  # exact cuts
    assert not any(path.startswith("/d0/") for path, _ in reads)  # (d1's last files share a group with its first piece)
    fresh, data = whole(root)
    assert (out.diff_id, out.extra["blob"]) == (fresh.diff_id, fresh.digest)
    assert read_blob(store, fresh.digest) == data
    assert store.fsck().ok


def test_groups_after_an_edit_are_read_back_from_their_frames_not_their_files(tmp_path: Path, monkeypatch: Any) -> None:
    from layerbuild.layer import mapped

    store = Store(tmp_path / "root")
    svc = services(store)
    root = tmp_path / "ctx"
    make_tree(root)
    out, _ = build(svc, root)
    reads: list[str] = []
    real = mapped._copy_file

    def counting(entry: MappedEntry, *args: Any) -> None:
        reads.append(entry.path)
        real(entry, *args)

    monkeypatch.setattr(mapped, "_copy_file", counting)
    edit(root, "d0/f0005.txt")  # near the start: every group after its own is as it was
    out, got = build(svc, root, out)
    assert "/d0/f0005.txt" in reads and len(reads) < 60  # the edited file's group, not the 600 files
    assert got["info"].reused == len(got["info"].frames) - 1
    fresh, data = whole(root)
    assert (out.diff_id, out.extra["blob"]) == (fresh.diff_id, fresh.digest)
    assert read_blob(store, fresh.digest) == data
    assert store.fsck().ok


def test_a_layer_no_step_builds_on_gets_no_recipe(tmp_path: Path) -> None:
    store = Store(tmp_path / "root")
    svc = services(store)
    root = tmp_path / "ctx"
    make_tree(root, files=50)
    out = svc.store_layer(lambda f: write_mapped(entries(root), f))  # as a RUN step's layer
    assert out.extra == {}
    assert list(chunks.recipe_digests(store.layout)) == []
    fresh, data = whole(root)
    assert read_blob(store, fresh.digest) == data


def test_frames_of_another_zstd_level_are_not_reused(tmp_path: Path) -> None:
    """A layer made at another zstd level (3, before the store's level was 1, recorded without a
    level) offers no frames to the step's next build: its blob is then written afresh, byte for byte
    the blob of the same tree written in one piece, and the build after that reuses again."""
    import dataclasses

    from layerbuild.layer.frames import ZSTD_LEVEL

    root = tmp_path / "tree"
    make_tree(root)
    with Store(tmp_path / "store") as store:
        svc = services(store)
        first, _ = build(svc, root)
        assert first.extra["zstd_level"] == ZSTD_LEVEL and svc.reuse_from(first) is not None
        older = dataclasses.replace(first, extra={k: v for k, v in first.extra.items() if k != "zstd_level"})
        assert svc.reuse_from(older) is None
        assert svc.reuse_from(dataclasses.replace(first, extra={**first.extra, "zstd_level": 3})) is None
        edit(root)
        second, got = build(svc, root, older)
        assert got["info"].reused == 0
        reference, blob = whole(root)
        assert second.diff_id == reference.diff_id and read_blob(store, got["info"].digest) == blob
        _, got = build(svc, root, second)
        assert got["info"].reused > 0
