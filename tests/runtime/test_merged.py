"""MergedView: the image's layers read on the host exactly as overlayfs merges them, never through the host.

Escape 2 of the sandbox issue: layer 1 has `etc -> /host/dir`, layer 2 a real `etc/`; the user was
resolved from the host's `/host/dir/passwd`, because a lower layer's symlink under an upper
directory was followed on the host.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.image import HistoryEntry, import_rootfs, resolve_image, write_image
from layerbuild.layer.ingest import ingest_layer
from layerbuild.runtime.merged import MergedView, place_mounts
from layerbuild.runtime.spec import SandboxError
from layerbuild.runtime.users import resolve_user
from layerbuild.store import Store

HOST_PASSWD = "root:x:0:0:root:/root:/bin/sh\nevil:x:4242:4242:evil:/evil:/bin/sh\n"


@pytest.fixture
def host_etc(tmp_path: Path) -> Path:
    """A directory standing for the host's files, which no image path may reach."""
    etc = tmp_path / "host" / "etcdir"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(HOST_PASSWD)
    (etc / "group").write_text("root:x:0:\nevil:x:4242:\n")
    (etc / "secret").write_text("host secret\n")
    return etc


def layers(tmp_path: Path, host_etc: Path, upper_passwd: str | None) -> list[Path]:
    one, two = tmp_path / "l1", tmp_path / "l2"
    one.mkdir()
    (one / "etc").symlink_to(host_etc)  # layer 1: etc -> a host path
    (two / "etc").mkdir(parents=True)  # layer 2: a real etc/ over it
    (two / "etc" / "hostname").write_text("box\n")
    if upper_passwd is not None:
        (two / "etc" / "passwd").write_text(upper_passwd)
    return [one, two]


def test_upper_directory_hides_a_lower_symlink(tmp_path: Path, host_etc: Path) -> None:
    view = MergedView(layers(tmp_path, host_etc, None))
    assert view.entry(["etc", "passwd"]) is None
    assert view.read("/etc/passwd") is None
    assert view.read("/etc/secret") is None
    assert view.read("/etc/hostname") == b"box\n"
    with pytest.raises(SandboxError, match="unable to find user evil"):
        resolve_user(view, "evil")


def test_users_come_from_the_upper_directory(tmp_path: Path, host_etc: Path) -> None:
    view = MergedView(layers(tmp_path, host_etc, "root:x:0:0::/root:/bin/sh\napp:x:77:78::/app:/bin/sh\n"))
    assert resolve_user(view, "app").uid == 77
    with pytest.raises(SandboxError, match="unable to find user evil"):
        resolve_user(view, "evil")


def test_a_lone_symlink_layer_resolves_inside_the_image(tmp_path: Path, host_etc: Path) -> None:
    """Without the upper dir, `etc` is the symlink: it is followed inside the image, where
    /tmp/.../etcdir does not exist, so nothing of the host is read."""
    view = MergedView(layers(tmp_path, host_etc, None)[:1])
    assert view.read("/etc/passwd") is None
    with pytest.raises(SandboxError, match="unable to find user evil"):
        resolve_user(view, "evil")


def test_entry_never_walks_through_a_symlink(tmp_path: Path, host_etc: Path) -> None:
    view = MergedView(layers(tmp_path, host_etc, None)[:1])
    assert view.entry(["etc", "passwd"]) is None  # `etc` is a link: the caller must resolve it


def test_a_lower_file_under_an_upper_directory_is_hidden(tmp_path: Path) -> None:
    one, two = tmp_path / "l1", tmp_path / "l2"
    (one / "data").mkdir(parents=True)
    (one / "data" / "old").write_text("old")
    (one / "thing").write_text("a file in layer 1")
    (two / "thing").mkdir(parents=True)
    (two / "data").mkdir()
    view = MergedView([one, two])
    assert view.read("/data/old") == b"old"  # directories merge
    assert view.entry(["thing"]) == os.path.join(two, "thing")


def test_mount_points_are_placed_inside_the_image(tmp_path: Path, host_etc: Path) -> None:
    lowers = layers(tmp_path, host_etc, None)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    points = place_mounts(MergedView(lowers), [("/etc/resolv.conf", True)], stubs)
    assert points[0].path == "/etc/resolv.conf"
    assert (stubs / "etc" / "resolv.conf").is_file()
    assert not (host_etc / "resolv.conf").exists()


def _layer_tar(entries: list[tuple[str, bytes, str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def host_symlink_image(store: Store, host_etc: Path, tag: str) -> None:
    """The issue's image: busybox, then a layer replacing /etc by a symlink to a host directory,
    then a layer putting a real /etc back, with no passwd in it."""
    from tests.runtime.conftest import busybox_tar

    import_rootfs(store, io.BytesIO(busybox_tar()), "busybox")
    config = resolve_image(store, "busybox").config.with_config(cmd=("id", "-u"))
    one = ingest_layer(store, io.BytesIO(_layer_tar([("etc", tarfile.SYMTYPE, str(host_etc), b"")])))
    two = ingest_layer(store, io.BytesIO(_layer_tar([
        ("etc", tarfile.DIRTYPE, "", b""),
        ("etc/marker", tarfile.REGTYPE, "", b"layer 2\n"),
    ])))
    for layer in (one, two):
        config = config.with_layer(layer.diff_id, HistoryEntry(created_by="test layer"))
    write_image(store, config, [tag])


@pytest.mark.integration
def test_run_resolves_users_inside_the_image(tmp_path: Path, host_etc: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    """The reproduction from the issue, through the CLI: `run -u evil IMG id -u`."""
    if os.geteuid() != 0:
        pytest.skip("runs as root (the runtime tests' busybox image)")
    root = tmp_path / "root"
    with Store.open(root) as store:
        host_symlink_image(store, host_etc, "evil")
    code = main(["--root", str(root), "run", "--rm", "-u", "evil", "evil", "id", "-u"])
    out, err = capfd.readouterr()
    assert code != 0 and "4242" not in out, (out, err)
    assert "unable to find user evil" in err
    code = main(["--root", str(root), "run", "--rm", "evil", "ls", "/etc"])
    out, err = capfd.readouterr()  # the kernel's overlay agrees: /etc is layer 2's directory alone
    assert code == 0 and "marker" in out.split() and "passwd" not in out.split(), (out, err)
