"""Shared test fixtures: where the conformance data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def conformance_root() -> Path | None:
    """`shared/conformance/` beside the repository (or inside it), found without fixed paths."""
    for base in (REPO, *REPO.parents):
        for candidate in (base / "shared" / "conformance", base / "conformance"):
            if (candidate / "index.json").is_file():
                return candidate
    return None


@pytest.fixture(scope="session")
def conformance() -> Path:
    root = conformance_root()
    if root is None:
        pytest.fail("shared/conformance/ not found beside the repository")
    return root
