"""ADD: local archives unpack (safely), remote files download with --checksum, against a local server."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import io
import lzma
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from layerbuild.context.tree import BuildContext
from layerbuild.errors import BuildError, UnsafeArchiveError
from layerbuild.worker.copy import select_copy
from tests.worker.helpers import extract, write


def _tar(members: dict[str, bytes], *, evil: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            info.uid = info.gid = 7
            tf.addfile(info, io.BytesIO(data))
        if evil:
            info = tarfile.TarInfo("../../escaped")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


COMPRESSORS = {
    "tar": lambda b: b,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


@pytest.mark.parametrize("fmt", sorted(COMPRESSORS))
def test_add_local_archive_unpacks(fmt: str, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "bundle").write_bytes(COMPRESSORS[fmt](_tar({"pkg/a.txt": b"A", "b.txt": b"B"})))
    sel = select_copy(BuildContext.open(root), ["bundle"], "/opt/", is_add=True)
    assert sel.sources[0].kind == "archive"
    t = extract(sel, tmp_path / "o")
    assert t["opt/pkg/a.txt"][4] == "A" and t["opt/b.txt"][4] == "B"
    if os.geteuid() == 0:
        assert t["opt/b.txt"][1:4] == (0o640, 7, 7)  # the archive's owners and modes


def test_copy_does_not_unpack_and_non_tar_gzip_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "bundle.tar").write_bytes(_tar({"a": b"A"}))
    (root / "notes.gz").write_bytes(gzip.compress(b"just text"))
    ctx = BuildContext.open(root)
    assert select_copy(ctx, ["bundle.tar"], "/x/").sources[0].kind == "single"
    assert select_copy(ctx, ["notes.gz"], "/x/", is_add=True).sources[0].kind == "single"


def test_add_malicious_archive_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "evil.tar").write_bytes(_tar({"ok": b"1"}, evil=True))
    sel = select_copy(BuildContext.open(root), ["evil.tar"], "/x/", is_add=True)
    with pytest.raises(UnsafeArchiveError):
        extract(sel, tmp_path / "o")
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


PAYLOAD = b"remote payload\n"


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/missing"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.send_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_add_url_with_checksum(server: str, tmp_path: Path) -> None:
    good = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    with select_copy(None, [f"{server}/files/tool.sh"], "/usr/bin/", is_add=True, checksum=good) as sel:
        assert sel.fingerprints == {f"{server}/files/tool.sh": good}  # keyed without downloading
        t = extract(sel, tmp_path / "o")
    assert t["usr/bin/tool.sh"][:2] == ("f", 0o600) and t["usr/bin/tool.sh"][4] == PAYLOAD.decode()
    assert os.stat(tmp_path / "o/usr/bin/tool.sh").st_mtime == 1445412480  # Last-Modified


def test_add_url_checksum_mismatch(server: str, tmp_path: Path) -> None:
    bad = "sha256:" + "0" * 64
    with (
        select_copy(None, [f"{server}/f"], "/f", is_add=True, checksum=bad) as sel,
        pytest.raises(BuildError, match="checksum mismatch"),
    ):
        extract(sel, tmp_path / "o")


def test_add_url_without_checksum_downloads_to_key(server: str, tmp_path: Path) -> None:
    with select_copy(None, [f"{server}/"], "/data/", is_add=True) as sel:
        assert list(sel.fingerprints.values()) == ["sha256:" + hashlib.sha256(PAYLOAD).hexdigest()]
        t = extract(sel, tmp_path / "o")
    assert "data/__unnamed__" in t
    with pytest.raises(BuildError, match="download failed"):
        select_copy(None, [f"{server}/missing"], "/m", is_add=True)


def test_checksum_rules(tmp_path: Path) -> None:
    write(tmp_path, {"a": "a"})
    ctx = BuildContext.open(tmp_path)
    with pytest.raises(BuildError, match="requires HTTP"):
        select_copy(ctx, ["a"], "/a", is_add=True, checksum="sha256:" + "0" * 64)
    with pytest.raises(BuildError, match="invalid --checksum"):
        select_copy(ctx, ["http://127.0.0.1:1/x"], "/a", is_add=True, checksum="md5:abc")


def test_add_archive_keeps_its_hard_links(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write(root, {"src/a": "x"})
    os.link(root / "src/a", root / "src/b")
    with tarfile.open(root / "t.tar", "w") as tf:
        tf.add(root / "src/a", "a")
        tf.add(root / "src/b", "b")  # tarfile writes the second name as a hard link
    sel = select_copy(BuildContext.open(root), ["t.tar"], "/x/", is_add=True)
    t = extract(sel, tmp_path / "o")
    assert t["x/b"][4] == "x"
    assert os.stat(tmp_path / "o/x/a").st_ino == os.stat(tmp_path / "o/x/b").st_ino
