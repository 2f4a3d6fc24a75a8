"""`layerbuild import`, `df`, `prune` and `fsck` against a real store in a temp root."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.cli.common import parse_size
from layerbuild.cli.main import main
from layerbuild.image import resolve_image
from layerbuild.store import Store


def rootfs_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("etc/hostname", b"box\n"), ("bin/hello", b"#!/bin/sh\necho hi\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def test_import_with_changes_and_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`import -c/--change` and `-m`, as `docker import` takes them; the name is optional."""
    root = ["--root", str(tmp_path / "store")]
    tar = str(rootfs_tar(tmp_path / "rootfs.tar"))
    assert main([*root, "import", "-c", "ENV PATH=/bin", "-c", "ENV X=$PATH:/x", "-c", 'CMD ["sh"]',
                 "-c", "WORKDIR app", "-c", "EXPOSE 80", "-c", "LABEL a=b", "-c", "USER 1000",
                 "-c", "STOPSIGNAL SIGINT", "-c", "VOLUME /data", "-c", "ENTRYPOINT [\"/bin/e\"]",
                 "-m", "from a tarball", tar, "imp:1"]) == 0
    image_id = capsys.readouterr().out.strip()
    with Store.open(tmp_path / "store") as store:
        image = resolve_image(store, "imp:1")
    assert image.config_digest == image_id
    run = image.config.config
    # as in a Dockerfile, an ENTRYPOINT after a CMD of the same changes keeps that CMD
    assert run.env == ("PATH=/bin", "X=/bin:/x") and run.cmd == ("sh",) and run.entrypoint == ("/bin/e",)
    assert run.working_dir == "/app" and run.exposed_ports == ("80/tcp",) and dict(run.labels) == {"a": "b"}
    assert run.user == "1000" and run.stop_signal == "SIGINT" and run.volumes == ("/data",)
    assert image.config.history[0].comment == "from a tarball"
    assert main([*root, "import", tar]) == 0  # no name: an untagged image, its id printed
    assert capsys.readouterr().out.startswith("sha256:")
    for bad, message in (("RUN echo hi", "RUN cannot be set by import"), ("ENV", "invalid --change")):
        assert main([*root, "import", "-c", bad, tar, "bad:1"]) == 2
        assert message in capsys.readouterr().err


def test_import_df_prune_fsck(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = ["--root", str(tmp_path / "store")]
    assert main([*root, "import", str(rootfs_tar(tmp_path / "rootfs.tar")), "base"]) == 0
    out = capsys.readouterr().out.strip()
    with Store.open(tmp_path / "store") as store:  # the image id, as docker import prints it
        assert out == resolve_image(store, "base").config_digest

    assert main([*root, "df"]) == 0
    out = capsys.readouterr().out
    assert "layers" in out and "manifests" in out and "reclaimable" in out

    # Everything belongs to a tag: prune, even --all, keeps it.
    assert main([*root, "prune", "--all", "--keep-storage", "0"]) == 0
    assert "0 blob(s)" in capsys.readouterr().out
    assert main([*root, "fsck"]) == 0
    assert ", ok" in capsys.readouterr().out


def test_import_unpacks_the_layer_for_runs_as_docker_import_does(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The imported layer is unpacked where RUN steps and containers read it (docker import puts it
    in its graph driver), so the first build FROM it does not unpack it; it stays a cache that prune
    may take and fsck accepts."""
    root = ["--root", str(tmp_path / "store")]
    assert main([*root, "import", str(rootfs_tar(tmp_path / "rootfs.tar")), "base"]) == 0
    capsys.readouterr()
    with Store.open(tmp_path / "store") as store:
        (diff_id,) = resolve_image(store, "base").config.diff_ids
        snapshot = store.snapshots.path(diff_id)
        assert store.snapshots.exists(diff_id)
    assert (snapshot / "bin" / "hello").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert (snapshot / "etc" / "hostname").stat().st_mode & 0o777 == 0o755
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


def _build(tmp_path: Path, root: list[str]) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("hi\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\nENV X=1\n")
    assert main([*root, "build", "-t", "t", "--progress", "quiet", str(ctx)]) == 0


def _df_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        if len(cells) == 4:
            rows[cells[0]] = cells[1:]
    return rows


def test_df_counts_and_prune_all_clears_the_parse_and_no_op_caches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    root = ["--root", str(store)]
    _build(tmp_path, root)
    assert len(list((store / "parsed").iterdir())) == 1
    assert len(list((store / "fastpath").iterdir())) == 2  # the record and its side file of stats
    capsys.readouterr()

    assert main([*root, "df"]) == 0
    rows = _df_rows(capsys.readouterr().out)
    assert rows["parsed dockerfiles"][0] == "1" and rows["parsed dockerfiles"][1] != "0 B"
    assert rows["no-op records"][0] == "2" and rows["no-op records"][1] != "0 B"

    assert main([*root, "prune"]) == 0  # a plain prune keeps them: they serve the next build
    assert "0 cache file(s)" in capsys.readouterr().out
    assert main([*root, "prune", "--all"]) == 0
    assert "3 cache file(s)" in capsys.readouterr().out
    assert list((store / "parsed").iterdir()) == [] and list((store / "fastpath").iterdir()) == []
    assert main([*root, "df"]) == 0
    rows = _df_rows(capsys.readouterr().out)
    assert rows["parsed dockerfiles"][:2] == ["0", "0 B"] and rows["no-op records"][:2] == ["0", "0 B"]
    assert main([*root, "fsck"]) == 0


@pytest.mark.parametrize("cache", ["parsed", "fastpath"])
@pytest.mark.parametrize("content", [b'{"truncated": ', b"\xff\xfe not json", b"[1, 2]"])
@pytest.mark.store_corrupted
def test_fsck_reports_and_removes_a_corrupt_cache_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cache: str, content: bytes
) -> None:
    store = tmp_path / "store"
    root = ["--root", str(store)]
    _build(tmp_path, root)
    (victim,) = (p for p in (store / cache).iterdir() if not p.name.endswith(".stats.json"))  # a record
    victim.write_bytes(content)
    capsys.readouterr()
    assert main([*root, "fsck", "--dry-run"]) == 1
    assert victim.exists()
    assert main([*root, "fsck"]) == 1
    err = capsys.readouterr().err
    assert f"corrupt cache file: {cache}/{victim.name}" in err and "(removed)" in err
    assert not victim.exists()
    assert main([*root, "fsck"]) == 0
    # Only a cache: the next build still works.
    assert main([*root, "build", "-t", "t", "--progress", "quiet", str(tmp_path / "ctx")]) == 0
    assert main([*root, "fsck"]) == 0


@pytest.mark.store_corrupted
def test_fsck_removes_a_directory_where_a_cache_file_belongs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    root = ["--root", str(store)]
    _build(tmp_path, root)
    (store / "parsed" / "junk.json").mkdir()
    (store / "fastpath" / ".x.json.1.tmp").write_text("a live writer's temp file")
    assert main([*root, "fsck"]) == 1
    assert "parsed/junk.json: not a JSON cache file" in capsys.readouterr().err
    assert not (store / "parsed" / "junk.json").exists()
    assert (store / "fastpath" / ".x.json.1.tmp").exists()  # fresh: its writer may be alive


def test_fsck_passes_after_a_build_whose_steps_made_no_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("hi\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\nWORKDIR /\nENV X=1\n")
    root = ["--root", str(tmp_path / "store")]
    assert main([*root, "build", "-t", "t", "--progress", "quiet", str(ctx)]) == 0
    capsys.readouterr()
    assert main([*root, "fsck"]) == 0, capsys.readouterr().err
    # The no-layer record survived, so the rebuild (past the fast path) hits every step.
    (ctx / "b").write_text("unrelated\n")
    report = tmp_path / "report.json"
    assert main([*root, "build", "-t", "t", "--progress", "quiet", "--report", str(report), str(ctx)]) == 0
    steps = {s["instruction"]: s for s in json.loads(report.read_text())["steps"]}
    assert steps["WORKDIR /"]["cached"] is True, steps["WORKDIR /"]["reason"]
