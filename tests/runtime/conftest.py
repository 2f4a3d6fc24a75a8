"""Fixtures for sandbox tests: a busybox image (Debian's busybox-static) imported into a shared store."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.image import import_rootfs, resolve_image
from layerbuild.runtime import lower_dirs_for
from layerbuild.store import Store

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:1000:\nextra:x:2000:app\n"


def find_busybox() -> str | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(candidate):
            out = subprocess.run(["file", "-L", candidate], capture_output=True, text=True).stdout \
                if shutil.which("file") else "statically linked"
            if "statically linked" in out or "static-pie" in out:
                return candidate
    return None


def busybox_tar() -> bytes:
    """A rootfs with a static busybox and its applets as symlinks, /etc/passwd and /etc/group."""
    busybox = find_busybox()
    if busybox is None:
        pytest.skip("needs a static busybox (apt-get install busybox-static)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755, data: bytes = b"",
                link: str = "", uid: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            info.uid = info.gid = uid
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "root", "home", "var"):
            add(d)
        add("tmp", mode=0o1777)
        add("home/app", mode=0o750, uid=1000)
        with open(busybox, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for applet in sorted(set(applets) - {"busybox"}):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD)
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP)
        add("etc/motd", tarfile.REGTYPE, 0o600, b"hello\n")
        add("var/run", tarfile.SYMTYPE, 0o777, link="/run")
    return buf.getvalue()


@pytest.fixture(scope="session")
def busybox_rootfs_tar() -> bytes:
    return busybox_tar()


@pytest.fixture(scope="session")
def shared_root(busybox_rootfs_tar: bytes) -> Iterator[Path]:
    """A store root holding the image `busybox`, with its snapshot unpacked once for all tests."""
    if os.geteuid() != 0:
        pytest.skip("the runtime tests run as root (rootless is tested through an unprivileged user)")
    base = Path(tempfile.mkdtemp(prefix="lb-runtime-"))
    root = base / "root"
    with Store.open(root) as store:
        import_rootfs(store, io.BytesIO(busybox_rootfs_tar), "busybox")
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def lowers(shared_root: Path) -> list[Path]:
    with Store.open(shared_root) as store:
        return lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)


@pytest.fixture
def scratch(shared_root: Path) -> Iterator[Path]:
    """A fresh dir under the store's tmp/ for one run's upper and work dirs."""
    path = Path(tempfile.mkdtemp(dir=shared_root / "tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
