"""Fixtures for image tests: a fresh store, and layers made from small trees with `layer.write_layer`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from layerbuild.layer import ChangeSet, write_changes, write_layer
from layerbuild.store import LayerRecord, Store

Tree = dict[str, bytes | str | None]  # path → file content, "->target" symlink text, None for a directory
MakeLayer = Callable[..., LayerRecord]


def make_tree(root: Path, tree: Tree) -> None:
    for rel, content in sorted(tree.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, str):
            os.symlink(content.removeprefix("->"), path)
        else:
            path.write_bytes(content)
            os.utime(path, (1_700_000_000, 1_700_000_000))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "root") as s:
        yield s


@pytest.fixture
def make_layer(store: Store, tmp_path: Path) -> MakeLayer:
    """`make_layer(tree, deleted=(), opaque=())`: a zstd layer of `tree` (plus whiteouts) in the store."""
    counter = iter(range(10_000))

    def make(tree: Tree, deleted: tuple[str, ...] = (), opaque: tuple[str, ...] = ()) -> LayerRecord:
        root = tmp_path / f"tree{next(counter)}"
        root.mkdir()
        make_tree(root, tree)
        with store.blobs.writer() as w:
            if deleted or opaque:
                changes = ChangeSet(changed=tuple(tree), deleted=deleted, opaque=opaque)
                info = write_changes(root, changes, w, source_date_epoch=1_700_000_000)  # type: ignore[arg-type]
            else:
                info = write_layer(root, w, source_date_epoch=1_700_000_000)  # type: ignore[arg-type]
        assert w.info.digest == info.digest
        return store.index.put_layer(info.digest, info.diff_id, info.size, info.uncompressed_size, info.media_type)

    return make
