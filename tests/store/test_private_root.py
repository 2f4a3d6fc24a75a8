"""The store root and the dirs that hold images' files as they are (snapshots, scratch) are private."""

from __future__ import annotations

import os
from pathlib import Path

from layerbuild.store import Store


def test_a_new_store_is_private(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root") as store:
        for path in (store.root, store.root / "tmp", store.root / "snapshots"):
            assert path.stat().st_mode & 0o777 == 0o700, path


def test_an_existing_open_store_is_made_private(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root):
        pass
    for path in (root, root / "tmp", root / "snapshots"):
        os.chmod(path, 0o755)
    with Store.open(root):
        pass
    for path in (root, root / "tmp", root / "snapshots"):
        assert path.stat().st_mode & 0o777 == 0o700, path
