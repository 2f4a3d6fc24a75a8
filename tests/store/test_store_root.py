"""Where the store root is: --root, then $LAYERBUILD_ROOT, then $XDG_DATA_HOME, then ~/.local/share."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.store import Store, resolve_root


def test_explicit_root_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERBUILD_ROOT", str(tmp_path / "env"))
    assert resolve_root(str(tmp_path / "flag")) == tmp_path / "flag"


def test_env_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERBUILD_ROOT", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_root(None) == tmp_path / "env"


def test_xdg_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAYERBUILD_ROOT", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_root(None) == tmp_path / "xdg" / "layerbuild"


def test_home_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAYERBUILD_ROOT", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_root(None) == tmp_path / ".local" / "share" / "layerbuild"


def test_open_creates_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERBUILD_ROOT", str(tmp_path / "r"))
    with Store.open() as store:
        assert store.root == tmp_path / "r"
        for sub in ("blobs/sha256", "tmp", "snapshots", "quarantine", "index.db"):
            assert (tmp_path / "r" / sub).exists()


@pytest.mark.store_corrupted
def test_an_index_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    from layerbuild.errors import StoreError

    root = tmp_path / "root"
    Store(root).close()
    for suffix in ("-wal", "-shm"):
        (root / f"index.db{suffix}").unlink(missing_ok=True)
    (root / "index.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match="cannot be read"):
        Store(root)
