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


@pytest.mark.parametrize("step", ["COPY --chown=evil f.txt /f.txt", "USER evil\nRUN id -u",
                                  "COPY --chown=1:evil f.txt /f.txt"])
def test_names_are_not_read_from_the_host(evil_root: tuple[Path, Path], ctx: Path, step: str,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    root, _ = evil_root
    code, err = build(root, ctx, f"FROM evil\n{step}\n", capfd)
    assert code != 0, err
    assert "evil" in err and "4242" not in err


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
