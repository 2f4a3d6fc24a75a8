"""Device nodes of an image reach the host only when asked for: local exports, bundles, build outputs."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.image import export_local, import_rootfs, resolve_image
from layerbuild.store import Store
from tests.conftest import BUSYBOX_BASE, busybox_binary

pytestmark = pytest.mark.integration


def device_rootfs() -> bytes:
    """A rootfs with a 0666 /dev/sda-like block node, a 0666 char node deep down, a file and a fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, major, minor in (("disk", tarfile.BLKTYPE, 8, 0), ("a/b/rng", tarfile.CHRTYPE, 10, 183)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.devmajor, info.devminor = kind, 0o666, major, minor
            tar.addfile(info)
        info = tarfile.TarInfo("a/file")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
        info = tarfile.TarInfo("a/fifo")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("device nodes are only written by root")
    with Store.open(tmp_path / "store") as store:
        import_rootfs(store, io.BytesIO(device_rootfs()), "devices:1")
    return tmp_path / "store"


def kinds(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            kind = "chr" if stat.S_ISCHR(mode) else "blk" if stat.S_ISBLK(mode) else "fifo" if stat.S_ISFIFO(mode) \
                else "dir" if stat.S_ISDIR(mode) else "file"
            out[os.path.relpath(os.path.join(dirpath, name), root)] = kind
    return out


def test_export_local_leaves_devices_out_unless_asked(root: Path, tmp_path: Path) -> None:
    with Store.open(root) as store:
        image = resolve_image(store, "devices:1")
        result = export_local(store, image, tmp_path / "out")
        assert result.devices_skipped == ("/a/b/rng", "/disk")
        assert kinds(tmp_path / "out") == {"a": "dir", "a/b": "dir", "a/file": "file", "a/fifo": "fifo"}
        result = export_local(store, image, tmp_path / "with", devices=True)
        assert result.devices_skipped == ()
        assert kinds(tmp_path / "with")["disk"] == "blk" and kinds(tmp_path / "with")["a/b/rng"] == "chr"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "store", "with"]  # no staging dir left


def test_bundle_leaves_devices_out_unless_asked(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(root), "bundle", "devices:1", str(tmp_path / "b"), "true"]) == 0
    err = capsys.readouterr().err
    assert "left out 2 device node(s)" in err and "/disk" in err and "--devices" in err
    assert "disk" not in kinds(tmp_path / "b" / "rootfs")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "rootfs"]
    assert main(["--root", str(root), "bundle", "--devices", "devices:1", str(tmp_path / "c"), "true"]) == 0
    assert kinds(tmp_path / "c" / "rootfs")["disk"] == "blk"


def test_build_output_local_devices_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("device nodes are only written by root")
    ctx, root = tmp_path / "ctx", tmp_path / "store"
    ctx.mkdir()
    shutil.copy(busybox_binary(), ctx / "busybox")
    (ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN mknod /zero c 1 5 && mknod /disk b 8 0 && chmod 666 /zero\n")
    out = tmp_path / "out"
    assert main(["--root", str(root), "build", "--progress", "plain", "--output", f"type=local,dest={out}",
                 str(ctx)]) == 0
    err = capsys.readouterr().err
    assert "warning: --output type=local" in err and "left out 2 device node(s): /disk, /zero" in err
    assert "zero" not in kinds(out) and kinds(out)["bin/busybox"] == "file"
    result = layerbuild.build(ctx, root=root, outputs=[{"type": "local", "dest": str(tmp_path / "dev"),
                                                        "devices": "true"}])
    assert kinds(tmp_path / "dev")["zero"] == "chr" and not result.warnings


@pytest.mark.parametrize(("output", "message"), [
    ("type=local,dest=X,devices=maybe", "invalid --output devices="),
    ("type=tar,dest=X,devices=true", "does not take devices="),
])
def test_bad_devices_option(tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, message: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    assert main(["--root", str(tmp_path / "store"), "build", "--output", output, str(ctx)]) == 2
    assert message in capsys.readouterr().err
