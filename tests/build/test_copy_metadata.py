"""COPY keeps what already exists below: the metadata of existing parent directories, and hard links."""

from __future__ import annotations

from pathlib import Path

import pytest

import layerbuild
from layerbuild.image.export import export_local
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration


def _export(root: Path, ref: str, out: Path) -> Path:
    with Store.open(root) as store:
        export_local(store, resolve_image(store, ref), out)
    return out


def test_copy_into_existing_directories_keeps_their_owner_and_mode(bb_ctx: Path, root: Path) -> None:
    """BuildKit's COPY layer carries each existing parent with the metadata it has below (fsutil's copy
    with CreateDestPath only creates what is missing; the layer diff then holds the parents as they
    are), so neither RUN, the image's files nor an export see them reset to 0:0 0755; only created
    directories take the --chown owner."""
    write(bb_ctx, {"f.txt": "f\n", "Dockerfile": BUSYBOX_BASE + """\
RUN mkdir -p /home/user /opt/app && chown 1000:1000 /home/user && chmod 0700 /home/user \\
 && chown 1000 /opt/app && chmod 0750 /opt/app
COPY f.txt /home/user/
COPY --chown=5:6 f.txt /opt/app/new/
RUN stat -c '%n %u:%g %a' /home/user /opt/app /opt/app/new /opt > /seen
"""})
    layerbuild.build(bb_ctx, root=root, tags=["meta:1"])
    fs = _export(root, "meta:1", root.parent / "fs")
    assert (fs / "seen").read_text().splitlines() == [
        "/home/user 1000:1000 700",
        "/opt/app 1000:0 750",
        "/opt/app/new 5:6 755",
        "/opt 0:0 755",
    ]
    for path, want in (("home/user", (1000, 1000, 0o700)), ("opt/app", (1000, 0, 0o750))):
        st = (fs / path).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == want
