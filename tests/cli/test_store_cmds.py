"""`layerbuild import`, `df`, `prune` and `fsck` against a real store in a temp root."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.cli.common import parse_size
from layerbuild.cli.main import main


def rootfs_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/hostname", b"box\n"), ("bin/hello", b"#!/bin/sh\necho hi\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def test_import_df_prune_fsck(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(tmp_path / "store")]
    assert main([*root, "import", str(rootfs_tar(tmp_path / "rootfs.tar")), "base"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("base:latest sha256:")

    assert main([*root, "df"]) == 0
    out = capsys.readouterr().out
    assert "layers" in out and "manifests" in out and "reclaimable" in out

    # Everything belongs to a tag: prune, even --all, keeps it.
    assert main([*root, "prune", "--all", "--keep-storage", "0"]) == 0
    assert "0 blob(s)" in capsys.readouterr().out
    assert main([*root, "fsck"]) == 0
    assert ", ok" in capsys.readouterr().out


def test_fsck_reports_a_corrupted_blob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    assert main(["--root", str(store), "import", str(rootfs_tar(tmp_path / "r.tar")), "base:1"]) == 0
    capsys.readouterr()
    blobs = sorted((store / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    victim = blobs[-1]  # the layer
    os.chmod(victim, 0o644)
    victim.write_bytes(b"not what it was")
    assert main(["--root", str(store), "fsck"]) == 1
    captured = capsys.readouterr()
    assert victim.name[:12] in captured.err
    assert main(["--root", str(store), "fsck"]) == 0  # repaired: quarantined and unreferenced


def test_import_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(tmp_path), "import", str(tmp_path / "nope.tar"), "x"]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("2048", 2048), ("1k", 1024), ("10GB", 10 << 30), ("1.5GiB", 3 << 29), ("512mb", 512 << 20)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_root_after_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(rootfs_tar(tmp_path / "r.tar")), "late:1", "--root", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    assert main(["--root", str(tmp_path / "s"), "images", "--json"]) == 0
    assert "late" in capsys.readouterr().out
