"""Build steps resolve image paths inside the image: an image whose layers once made /etc a symlink
to a host directory (then put a real /etc back) never makes a step read or write the host's files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.store import Store
from tests.runtime.test_merged import HOST_PASSWD, host_symlink_image

pytestmark = pytest.mark.integration


@pytest.fixture
def evil_root(tmp_path: Path) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        pytest.skip("runs as root (rootless builds are tested through an unprivileged user)")
    host = tmp_path / "host" / "etcdir"
    host.mkdir(parents=True)
    (host / "passwd").write_text(HOST_PASSWD)
    (host / "group").write_text("root:x:0:\nevil:x:4242:\n")
    root = tmp_path / "store"
    with Store.open(root) as store:
        host_symlink_image(store, host, "evil")
    return root, host


def build(root: Path, ctx: Path, dockerfile: str, capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text("context file\n")
    code = main(["--root", str(root), "build", "--progress", "plain", "-t", "out", str(ctx)])
    return code, capfd.readouterr().err


def test_user_names_are_not_read_from_the_host(evil_root: tuple[Path, Path], ctx: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    root, _ = evil_root
    code, err = build(root, ctx, "FROM evil\nUSER evil\nRUN id -u\n", capfd)
    assert code != 0, err
    assert "evil" in err and "4242" not in err


@pytest.mark.parametrize(("chown", "owner"), [("evil", "0:0"), ("1:evil", "1:1")])
def test_chown_names_are_not_read_from_the_host(evil_root: tuple[Path, Path], ctx: Path, chown: str, owner: str,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """A name only the host knows is a name the image does not know: BuildKit's ids for it (0, or
    the user's gid for a group), never the host's 4242."""
    root, _ = evil_root
    code, err = build(root, ctx, f"FROM evil\nCOPY --chown={chown} f.txt /f.txt\n", capfd)
    assert code == 0, err
    assert main(["--root", str(root), "run", "--rm", "out", "stat", "-c", "%u:%g", "/f.txt"]) == 0
    assert capfd.readouterr().out.strip() == owner


def test_copy_and_workdir_write_inside_the_image(evil_root: tuple[Path, Path], ctx: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    root, host = evil_root
    code, err = build(root, ctx, "FROM evil\nCOPY f.txt /etc/copied.txt\nWORKDIR /etc/work\n"
                      "RUN ls /etc > /listing\n", capfd)
    assert code == 0, err
    assert sorted(p.name for p in host.iterdir()) == ["group", "passwd"]  # nothing written on the host
    code = main(["--root", str(root), "run", "--rm", "out", "cat", "/listing", "/etc/copied.txt"])
    out = capfd.readouterr().out
    assert code == 0
    names = out.split()
    assert {"copied.txt", "marker", "work"} <= set(names) and "passwd" not in names
    assert "context file" in out
