"""Decompression bombs: a 1 MB gzip holding 1 GiB of zeros loads in bounded memory, and one that would
not fit the store's free space is refused at its first header, before it is inflated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbuild.errors import UnsafeArchiveError
from layerbuild.layer.ingest import ingest_layer
from layerbuild.store import Store
from tests.malformed.bombs import docker_archive, gzip_zeros_layer, load_in_child

GIB = 1 << 30


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(the gzip layer, a docker archive of it, its diff_id): 1 GiB of zeros in about 1 MB."""
    base = tmp_path_factory.mktemp("bomb")
    layer = base / "layer.gz"
    with open(layer, "wb") as f:
        diff_id = gzip_zeros_layer(f, GIB)
    archive = base / "bomb.tar"
    docker_archive(archive, layer, diff_id)
    assert archive.stat().st_size < 2 << 20
    return layer, archive, diff_id


@pytest.mark.integration
@pytest.mark.slow
def test_a_gzip_bomb_loads_in_bounded_memory(bomb: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, archive, diff_id = bomb
    root = tmp_path / "store"
    code, err, peak = load_in_child(root, archive)
    assert code == 0, err
    assert peak < 256 << 20, f"peak RSS {peak >> 20} MiB while inflating 1 GiB"  # it was 2 GiB
    with Store(root) as store:
        (layer,) = store.index.layers_by_diff_id(diff_id)
        assert layer.diff_size == GIB + 1536
        assert layer.size < 1 << 20  # stored as zstd: zeros stay small
        assert store.index.get_tag("bomb:1") is not None


def test_a_bomb_over_the_limit_is_refused_at_its_header(bomb: tuple[Path, Path, str], tmp_path: Path) -> None:
    layer, _, _ = bomb
    with Store(tmp_path / "store") as store, open(layer, "rb") as src:
        with pytest.raises(UnsafeArchiveError, match=r"entry 'zeros' declares 1073741824 bytes, more than"):
            ingest_layer(store, src, max_bytes=64 << 20)
        assert list(store.blobs.list()) == [] and store.index.list_layers() == ()
        assert os.listdir(store.layout.tmp) == []


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.mark.integration
def test_a_bomb_bigger_than_the_free_disk_is_refused_early(bomb: tuple[Path, Path, str], small_disk: Path) -> None:
    _, archive, _ = bomb
    root = small_disk / "store"
    with Store(root):
        pass
    used = _used(small_disk)
    code, err, _ = load_in_child(root, archive)
    assert code == 1, err
    assert "declares 1073741824 bytes, more than the" in err and "internal error" not in err, err
    assert _used(small_disk) - used < 1 << 20  # nothing was inflated onto the disk
    with Store(root) as store:
        assert store.index.list_layers() == () and store.index.get_tag("bomb:1") is None
