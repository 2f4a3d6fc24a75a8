"""COPY keeps what already exists below: the metadata of existing parent directories, and hard links."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard

import layerbuild
from layerbuild.image.export import export_local
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE, busybox_binary
from tests.runtime.rootless import as_user, ensure_user, python_for_user, rootless_home  # noqa: F401

pytestmark = pytest.mark.integration


def _members(blob: bytes) -> dict[str, tuple[int, int, int]]:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: (m.uid, m.gid, m.mode) for m in tar.getmembers()}


def _export(root: Path, ref: str, out: Path) -> Path:
    with Store.open(root) as store:
        export_local(store, resolve_image(store, ref), out)
    return out


def test_copy_into_existing_directories_keeps_their_owner_and_mode(bb_ctx: Path, root: Path) -> None:
    """BuildKit's COPY layer carries each existing parent with the metadata it has below: fsutil's
    `Copy` (copy/copy.go, used by BuildKit's file op) only creates what `MkdirAll`/`prepareTargetDir`
    find missing and leaves an existing destination directory's mode and owner alone
    (`copyDirectoryOnly` reports it not created), and the layer diff then holds the parents as they
    are. So neither RUN, the image's layers (what `save` writes) nor an export see them reset to
    0:0 0755; only created directories take the --chown owner."""
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
    with Store.open(root) as store:  # the layer blobs themselves, as `save` hands them to docker load
        layers = resolve_image(store, "meta:1").layers
        copies = [_members(store.blobs.path(r.digest).read_bytes()) for r in layers[-3:-1]]
    assert copies[0]["home/user"] == (1000, 1000, 0o700)
    assert copies[1]["opt/app"] == (1000, 0, 0o750) and copies[1]["opt/app/new"] == (5, 6, 0o755)


def test_hard_links_survive_copy_run_and_local_export(bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    """Files sharing an inode in a COPY source stay one inode in the snapshot RUN sees and in an
    `--output type=local` export: fsutil's copier (copy/copy.go, BuildKit's file op) keeps an
    `inodes` map per copied source and hard-links later paths of an inode (`getLinkSource`), so
    the layer diff holds them as tar hard links."""
    write(bb_ctx, {"tree/a": "same\n", "Dockerfile": BUSYBOX_BASE + """\
COPY tree /tree/
RUN stat -c '%n %h' /tree/a /tree/b /tree/c > /links && test "$(stat -c %i /tree/a)" = "$(stat -c %i /tree/c)"
"""})
    os.link(bb_ctx / "tree/a", bb_ctx / "tree/b")
    os.link(bb_ctx / "tree/a", bb_ctx / "tree/c")
    out = tmp_path / "local"
    layerbuild.build(bb_ctx, root=root, tags=["links:1"], outputs=[("local", str(out))])
    assert (out / "links").read_text().splitlines() == ["/tree/a 3", "/tree/b 3", "/tree/c 3"]
    stats = [os.stat(out / "tree" / n) for n in "abc"]
    assert len({st.st_ino for st in stats}) == 1 and stats[0].st_nlink == 3
    assert (out / "tree/c").read_text() == "same\n"


def test_changing_only_the_link_structure_rebuilds_the_copy(bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    """Same names, contents, modes and mtimes, but /tree/b no longer a link of /tree/a: the cached COPY
    layer (with its hard link) must not be reused."""
    write(bb_ctx, {"tree/a": "same\n", "Dockerfile": BUSYBOX_BASE + "COPY tree /tree/\nRUN stat -c %h /tree/b > /n\n"})
    os.link(bb_ctx / "tree/a", bb_ctx / "tree/b")
    first = tmp_path / "one"
    layerbuild.build(bb_ctx, root=root, tags=["l:1"], outputs=[("local", str(first))])
    assert (first / "n").read_text() == "2\n"
    mtime = os.stat(bb_ctx / "tree/a").st_mtime_ns
    os.unlink(bb_ctx / "tree/b")
    (bb_ctx / "tree/b").write_text("same\n")
    os.utime(bb_ctx / "tree/b", ns=(mtime, mtime))
    second = tmp_path / "two"
    layerbuild.build(bb_ctx, root=root, tags=["l:2"], outputs=[("local", str(second))])
    assert (second / "n").read_text() == "1\n"
    assert os.stat(second / "tree/a").st_ino != os.stat(second / "tree/b").st_ino


def test_existing_parent_metadata_rootless(rootless_home: Path) -> None:  # noqa: F811
    """Rootless, the stage below records owners in an xattr: the COPY layer must carry those, not the
    unprivileged user's own ids, for the parents it passes through."""
    user = ensure_user()
    ctx = rootless_home / "ctx-meta"
    ctx.mkdir(exist_ok=True)
    (ctx / "f.txt").write_text("f\n")
    (ctx / "Dockerfile").write_text(BUSYBOX_BASE + """\
RUN mkdir -p /home/user && chown 1000:1000 /home/user && chmod 0700 /home/user
COPY f.txt /home/user/
RUN stat -c '%u:%g %a' /home/user > /seen
CMD ["cat", "/seen"]
""")
    shutil.copy(busybox_binary(), ctx / "busybox")
    for path in (ctx, *ctx.iterdir()):
        os.chown(path, user.pw_uid, user.pw_gid)
    python, env = python_for_user(rootless_home)
    lb = [python, "-m", "layerbuild", "--root", str(rootless_home / "store-meta")]
    built = as_user([*lb, "build", "--progress", "plain", "-t", "meta:1", str(ctx)], env)
    assert built.returncode == 0, built.stderr
    ran = as_user([*lb, "run", "--rm", "meta:1"], env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "1000:1000 700"
