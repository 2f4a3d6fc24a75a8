"""A multi-stage build with RUN steps, and running its image, as an unprivileged user (rootless)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.runtime.rootless import as_user, ensure_user, python_for_user, rootless_home  # noqa: F401

pytestmark = pytest.mark.integration

DOCKERFILE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]

FROM base AS gen
RUN echo "made by $(id -u) in a user namespace" > /made.txt

FROM base
COPY --from=gen /made.txt /made.txt
RUN rm -f /bin/wget && echo done > /done
CMD ["cat", "/made.txt"]
"""


def test_build_and_run_rootless(rootless_home: Path) -> None:  # noqa: F811
    user = ensure_user()
    ctx = rootless_home / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, ctx / "busybox")
    for path in (ctx, ctx / "Dockerfile", ctx / "busybox"):
        os.chown(path, user.pw_uid, user.pw_gid)
    python, env = python_for_user(rootless_home)
    store = str(rootless_home / "store")
    lb = [python, "-m", "layerbuild", "--root", store]
    built = as_user([*lb, "build", "--progress", "plain", "-t", "rl:1", str(ctx)], env)
    assert built.returncode == 0, built.stderr
    again = as_user([*lb, "build", "--progress", "plain", "-t", "rl:1", str(ctx)], env)
    assert again.returncode == 0 and "hit rate 100%" in again.stderr, again.stderr
    ran = as_user([*lb, "run", "--rm", "rl:1"], env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "made by 0 in a user namespace"
    status = as_user([*lb, "run", "--rm", "rl:1", "sh", "-c", "test ! -e /bin/wget && exit 5"], env)
    assert status.returncode == 5


def test_build_from_an_archive_on_stdin_rootless(rootless_home: Path) -> None:  # noqa: F811
    """`build -` as an unprivileged user: the archive is unpacked in the user's store, not as root."""
    import io
    import tarfile

    user = ensure_user()
    archive = rootless_home / "ctx-stdin.tar.gz"
    busybox = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
    with tarfile.open(archive, "w:gz") as tar:
        for name, data, mode in (("Dockerfile", DOCKERFILE.encode(), 0o644), ("busybox", busybox, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, 1000, 1000
            tar.addfile(info, io.BytesIO(data))
    os.chown(archive, user.pw_uid, user.pw_gid)
    python, env = python_for_user(rootless_home)
    command = f"exec {python} -m layerbuild --root {rootless_home / 'store-stdin'} build --progress plain"
    built = as_user(["sh", "-c", f"{command} -t rl-stdin:1 - < {archive}"], env)
    assert built.returncode == 0, built.stderr
    again = as_user(["sh", "-c", f"{command} -t rl-stdin:1 - < {archive}"], env)
    assert again.returncode == 0 and "hit rate 100%" in again.stderr, again.stderr
