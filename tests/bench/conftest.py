"""Fixtures of the bench tests: a store holding busybox (the base the generated history builds on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.kit import busybox_store


@pytest.fixture(scope="module")
def base_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_store(tmp_path_factory.mktemp("bench-root") / "root")
