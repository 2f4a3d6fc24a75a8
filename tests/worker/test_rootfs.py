"""A build state's filesystem views (worker/rootfs.py): as root, one layer is its snapshot bound
read-only and several an overlay, both in the helper's mount namespace; nothing is copied, nothing
can be written, and closing the cache takes the views away."""

from __future__ import annotations

import errno
import io
import os
import tarfile
from pathlib import Path

import pytest

from layerbuild.image import import_rootfs, resolve_image
from layerbuild.store import Store
from layerbuild.worker.rootfs import RootfsCache

pytestmark = pytest.mark.integration


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("prestart", [False, True])
def test_a_one_layer_view_is_its_snapshot_read_only_and_goes_with_the_cache(tmp_path: Path, prestart: bool) -> None:
    if os.geteuid() != 0:
        pytest.skip("views are mounts as root only")
    with Store.open(tmp_path / "root") as store:
        import_rootfs(store, io.BytesIO(_tar({"etc/hello": b"hi\n"})), "one")
        diff_ids = tuple(resolve_image(store, "one").config.diff_ids)
        cache = RootfsCache(store)
        if prestart:
            cache.prestart()
        view = cache.get("state-one", diff_ids)
        assert str(view).startswith("/proc/")  # in the helper's namespace, not a copy in ours
        assert (view / "etc" / "hello").read_bytes() == b"hi\n"
        assert cache.get("state-one", diff_ids) == view  # made once per build
        with pytest.raises(OSError) as info:
            (view / "etc" / "new").write_text("x")
        assert info.value.errno == errno.EROFS
        helper = cache._helper
        cache.close()
        assert helper is not None and helper.returncode == 0  # ended on EOF, reaped
        assert not (view / "etc" / "hello").exists()
        assert not any((store.root / "tmp").glob("rootfs-*"))


def test_closing_before_a_prestarted_helper_is_up_starts_none_after(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root") as store:
        cache = RootfsCache(store)
        cache.prestart()
        cache.close()
        import threading

        for thread in threading.enumerate():
            if thread.name == "rootfs-helper":
                thread.join(timeout=30)
        assert cache._helper is None
