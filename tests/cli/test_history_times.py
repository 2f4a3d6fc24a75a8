"""`layerbuild history` of a built image: config-only steps show when they were made, not 1970."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main


def test_history_of_config_only_steps_is_recent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nENV A=1\nCMD [\"x\"]\n")
    root = tmp_path / "store"
    layerbuild.build(ctx, root=root, tags=["h:1"])
    capsys.readouterr()
    assert main(["--root", str(root), "history", "h:1"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 2
    assert all("years ago" not in row and "ago" in row for row in rows), rows
    assert main(["--root", str(root), "history", "--json", "h:1"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["empty_layer"] for e in entries] == [True, True]
    assert all(not e["created"].startswith("1970") for e in entries)
