"""What the CLI tests of `run` share: a store holding the busybox image, and `lb` to run a verb in-process."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.image import import_rootfs
from layerbuild.runtime import containers
from layerbuild.store import Store
from tests.runtime.conftest import busybox_tar


@contextlib.contextmanager
def busybox_root(prefix: str, *, skip_rootless: str | None = None) -> Iterator[Path]:
    """A new store root (under a temp dir named `prefix`) with the image `busybox`; containers left
    in it are removed, and the dir, afterwards. `skip_rootless` skips the test unless run as root."""
    if skip_rootless is not None and os.geteuid() != 0:
        pytest.skip(skip_rootless)
    base = Path(tempfile.mkdtemp(prefix=prefix))
    root = base / "root"
    try:
        with Store.open(root) as store:
            import_rootfs(store, io.BytesIO(busybox_tar()), "busybox")
        yield root
    finally:
        for c in containers.list_all(root) if root.exists() else ():
            main(["--root", str(root), "rm", "-f", c.id])
        shutil.rmtree(base, ignore_errors=True)


def lb(root: Path, capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`layerbuild --root ROOT ARGV...` in-process: (exit code, stdout, stderr)."""
    code = main(["--root", str(root), *argv])
    out, err = capfd.readouterr()
    return code, out, err
