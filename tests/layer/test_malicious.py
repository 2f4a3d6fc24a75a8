"""Evil archives: every escape attempt is refused or contained, and nothing outside the destination changes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from layerbuild.errors import UnsafeArchiveError

from .treeutil import apply_bytes, snapshot

REPO = Path(__file__).resolve().parents[2]
ETC_PASSWD = Path("/etc/passwd")


def evil_tar(*members: tuple[str, str, str | bytes]) -> bytes:
    """A tar of (name, type, payload): type is file/dir/symlink/hardlink/chardev; payload is data or target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "chardev": tarfile.CHRTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                assert isinstance(payload, str)
                info.linkname = payload
            if kind == "chardev":
                info.devmajor, info.devminor = 1, 3
            tf.addfile(info)
    return buf.getvalue()


@contextlib.contextmanager
def sandboxed(base: Path) -> Iterator[Path]:
    """base/outer/sandbox/{victim, secret/, dest/}; on exit, asserts that nothing but dest changed."""
    box = base / "outer" / "sandbox"
    (box / "secret").mkdir(parents=True)
    (box / "victim").write_text("original")
    (box / "secret" / "key").write_text("k")
    (box / "dest").mkdir()
    passwd_before = hashlib.sha256(ETC_PASSWD.read_bytes()).hexdigest()
    before = _outside(box)
    yield box
    assert _outside(box) == before, "something outside the destination changed"
    assert hashlib.sha256(ETC_PASSWD.read_bytes()).hexdigest() == passwd_before
    assert os.stat(ETC_PASSWD).st_nlink == 1


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Path]:
    with sandboxed(tmp_path) as box:
        yield box


def _outside(box: Path) -> dict[str, object]:
    snap = snapshot(box.parent)
    # The destination's own metadata may change (a `./` entry sets it); only its type must not.
    snap["sandbox/dest"] = {"type": snap["sandbox/dest"]["type"]}  # type: ignore[index]
    return {k: v for k, v in snap.items() if not k.startswith("sandbox/dest/")}


def refused(data: bytes, dest: Path, fragment: str, **kw: object) -> str:
    with pytest.raises(UnsafeArchiveError) as err:
        apply_bytes(data, dest, **kw)
    assert fragment in str(err.value)
    return str(err.value)


def test_absolute_path_is_made_relative(sandbox: Path) -> None:
    victim = str(sandbox / "victim")
    apply_bytes(evil_tar((victim, "file", "evil"), ("/abs", "file", "x")), sandbox / "dest")
    assert (sandbox / "dest" / victim.lstrip("/")).read_text() == "evil"
    assert (sandbox / "dest" / "abs").read_text() == "x"


@pytest.mark.parametrize("name", ["../victim", "a/../../victim", "./../victim", "a/b/../../../victim"])
def test_dotdot_traversal_is_refused(sandbox: Path, name: str) -> None:
    msg = refused(evil_tar((name, "file", "evil")), sandbox / "dest", "above the destination root")
    assert name in msg


def test_symlink_to_root_then_file_through_it_stays_inside(sandbox: Path) -> None:
    rel_victim = str(sandbox / "victim").lstrip("/")
    data = evil_tar(
        ("s", "symlink", "/"), (f"s/{rel_victim}", "file", "evil"), ("s/etc/passwd", "file", "evil")
    )
    apply_bytes(data, sandbox / "dest")
    assert (sandbox / "dest" / rel_victim).read_text() == "evil"
    assert (sandbox / "dest" / "etc" / "passwd").read_text() == "evil"


def test_symlink_to_absolute_outside_dir_stays_inside(sandbox: Path) -> None:
    data = evil_tar(("s", "symlink", str(sandbox)), ("s/victim", "file", "evil"))
    apply_bytes(data, sandbox / "dest")
    assert (sandbox / "dest" / str(sandbox).lstrip("/") / "victim").read_text() == "evil"


@pytest.mark.parametrize("target", ["../../x", "..", "../../sandbox", "a/../../..", "/../.."])
def test_relative_symlink_out_then_write_through_it_is_refused(sandbox: Path, target: str) -> None:
    data = evil_tar(("d", "dir", ""), ("d/s", "symlink", target), ("d/s/victim", "file", "evil"))
    if target == "..":  # d/s -> .. is the root itself: contained
        apply_bytes(data, sandbox / "dest")
        assert (sandbox / "dest" / "victim").read_text() == "evil"
        return
    refused(data, sandbox / "dest", "points outside the destination")


def test_chained_symlinks_out_are_refused(sandbox: Path) -> None:
    data = evil_tar(
        ("a", "symlink", "b/.."), ("b", "symlink", "c"), ("c", "symlink", ".."), ("a/victim", "file", "x")
    )
    refused(data, sandbox / "dest", "points outside the destination")


def test_symlink_loop_is_refused(sandbox: Path) -> None:
    data = evil_tar(("a", "symlink", "b"), ("b", "symlink", "a"), ("a/x", "file", "x"))
    refused(data, sandbox / "dest", "too many levels of symbolic links")


def test_existing_symlink_in_destination_is_resolved_inside(sandbox: Path) -> None:
    dest = sandbox / "dest"
    os.symlink(str(sandbox), dest / "lower-link")  # as a lower layer might have left it
    os.symlink("../..", dest / "lower-rel")
    apply_bytes(evil_tar(("lower-link/victim", "file", "evil")), dest)
    assert (dest / str(sandbox).lstrip("/") / "victim").read_text() == "evil"
    refused(evil_tar(("lower-rel/victim", "file", "evil")), dest, "outside the destination")
    # The entry's own name is never followed: a file entry replaces the symlink itself.
    apply_bytes(evil_tar(("lower-link", "file", "now a file")), dest)
    assert (dest / "lower-link").read_text() == "now a file"


@pytest.mark.parametrize("target", ["/etc/passwd", "etc/passwd", "../victim", "../../../../../../etc/passwd"])
def test_hardlink_outside_is_refused(sandbox: Path, target: str) -> None:
    msg = refused(evil_tar(("h", "hardlink", target)), sandbox / "dest", "")
    assert "'h'" in msg


def test_hardlink_to_absolute_outside_path_is_refused(sandbox: Path) -> None:
    refused(
        evil_tar(("h", "hardlink", str(sandbox / "victim"))), sandbox / "dest", "is not in the destination"
    )


def test_hardlink_through_symlink_out_is_refused(sandbox: Path) -> None:
    data = evil_tar(("s", "symlink", "/"), ("h", "hardlink", "s/etc/passwd"))
    refused(data, sandbox / "dest", "is not in the destination")
    data = evil_tar(("r", "symlink", "../"), ("h", "hardlink", "r/victim"))
    refused(data, sandbox / "dest", "outside the destination")


def test_hardlink_inside_works(sandbox: Path) -> None:
    apply_bytes(evil_tar(("f", "file", "x"), ("/h", "hardlink", "/f")), sandbox / "dest")
    assert os.stat(sandbox / "dest" / "h").st_ino == os.stat(sandbox / "dest" / "f").st_ino


@pytest.mark.parametrize("name", [".", "./", "/", "a/..", ""])
@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_entry_replacing_the_root_is_refused(sandbox: Path, name: str, kind: str) -> None:
    payload = "/" if kind == "symlink" else "x"
    refused(evil_tar((name, kind, payload)), sandbox / "dest", "would replace the destination root")
    assert (sandbox / "dest").is_dir() and not (sandbox / "dest").is_symlink()


def test_root_directory_entry_is_accepted(sandbox: Path) -> None:
    result = apply_bytes(evil_tar(("./", "dir", ""), ("./a", "file", "x")), sandbox / "dest")
    assert result.entries == 2
    assert (sandbox / "dest" / "a").read_text() == "x"


@pytest.mark.parametrize("name", ["../.wh.victim", ".wh...", "d/.wh..", ".wh."])
def test_evil_whiteouts_are_refused(sandbox: Path, name: str) -> None:
    refused(
        evil_tar(("d", "dir", ""), (name, "file", "")), sandbox / "dest", name.rstrip("/").split("/")[-1][:3]
    )


def test_whiteout_and_opaque_through_symlinks(sandbox: Path) -> None:
    dest = sandbox / "dest"
    rel = str(sandbox).lstrip("/")
    apply_bytes(evil_tar(("s", "symlink", "/"), (f"s/{rel}/.wh.victim", "file", "")), dest)
    apply_bytes(evil_tar(("t", "symlink", str(sandbox)), ("t/.wh..wh..opq", "file", "")), dest)
    refused(
        evil_tar(("r", "symlink", "../.."), ("r/.wh..wh..opq", "file", "")), dest, "outside the destination"
    )
    refused(evil_tar(("q", "symlink", ".."), ("q/.wh.sandbox", "file", "")), dest, "outside the destination")


def test_entry_below_a_file_is_refused(sandbox: Path) -> None:
    refused(evil_tar(("f", "file", "x"), ("f/g", "file", "y")), sandbox / "dest", "is not a directory")


def test_tar_bomb_of_entries_is_bounded(sandbox: Path) -> None:
    data = evil_tar(*[(f"d/{i}", "file", "") for i in range(3000)])
    refused(data, sandbox / "dest", "more than 1000 entries", max_entries=1000)
    assert len(os.listdir(sandbox / "dest" / "d")) <= 1000


def test_tar_bomb_of_bytes_is_bounded(sandbox: Path) -> None:
    # 64 MiB of zeros in a few KiB of zstd.
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as tf:
        info = tarfile.TarInfo("zeros")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    blob = zstandard.ZstdCompressor().compress(tar.getvalue())
    assert len(blob) < 100_000
    refused(blob, sandbox / "dest", "limit", max_bytes=8 << 20)


def test_garbage_and_truncation_are_refused(sandbox: Path) -> None:
    good = evil_tar(("a", "file", "x" * 5000))
    refused(good[:700], sandbox / "dest", "truncated")
    refused(b"this is not a tar archive at all" * 40, sandbox / "dest", "checksum")
    blob = zstandard.ZstdCompressor(write_checksum=True).compress(good)
    for cut in (1, 4, 9, len(blob) // 2):
        refused(blob[:-cut], sandbox / "dest", "zstd")


def _can_drop_privileges() -> bool:
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.skipif(not _can_drop_privileges(), reason="needs root and setpriv to run a non-root child")
def test_device_node_as_non_root_is_skipped_or_refused() -> None:
    base = Path(tempfile.mkdtemp(prefix="layer-nonroot-"))  # pytest's tmp dirs are closed to other users
    try:
        os.chmod(base, 0o755)
        with sandboxed(base) as box:
            _device_as_nobody(box / "dest", base / "dev.tar")
    finally:
        shutil.rmtree(base)


def _device_as_nobody(dest: Path, archive: Path) -> None:
    os.chmod(dest.parent.parent, 0o755)
    os.chmod(dest.parent, 0o755)
    os.chown(dest, 65534, 65534)
    archive.write_bytes(evil_tar(("null", "chardev", ""), ("f", "file", "x")))
    code = (
        "import sys; from layerbuild.layer import apply_layer; from layerbuild.errors import UnsafeArchiveError\n"
        "strict = sys.argv[3] == 'strict'\n"
        "try:\n"
        "    r = apply_layer(open(sys.argv[1], 'rb'), sys.argv[2], require_privileges=strict)\n"
        "    print('skipped', *r.skipped)\n"
        "except UnsafeArchiveError as e:\n"
        "    print('refused', e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for mode in ("lenient", "strict"):
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code]
        proc = subprocess.run([*argv, str(archive), str(dest), mode], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        if mode == "lenient":
            assert proc.stdout.split() == ["skipped", "null"]
            assert (dest / "f").read_text() == "x" and not (dest / "null").exists()
        else:
            assert proc.stdout.startswith("refused") and "null" in proc.stdout
