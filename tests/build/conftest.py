"""Fixtures for real builds: a temporary store root and a context directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.store import Store


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    with Store.open(root) as s:
        yield s


def write(ctx: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
