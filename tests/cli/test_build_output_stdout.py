"""`build -o type=tar,dest=-` and `-o -` stream the archive to standard output, as docker does
(before, a file named `-` was written into the working directory)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

DOCKERFILE = "FROM scratch\nCOPY hello.txt /greeting/hello.txt\nCMD [\"/x\"]\n"


def build(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "hello.txt").write_text("hello\n")
    (tmp_path / "tmp").mkdir(exist_ok=True)  # where the archive for standard output is staged
    return subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(tmp_path / "store"), "build",
                           "--progress", "quiet", *flags, str(ctx)], capture_output=True, cwd=ctx, check=False,
                          env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})


@pytest.mark.parametrize("flag", ["type=tar,dest=-", "-"])
def test_a_tar_goes_to_standard_output(tmp_path: Path, flag: str) -> None:
    done = build(tmp_path, "-o", flag)
    assert done.returncode == 0, done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        member = tar.extractfile("greeting/hello.txt")
        assert member is not None and member.read() == b"hello\n"
    assert sorted(p.name for p in (tmp_path / "ctx").iterdir()) == ["Dockerfile", "hello.txt"]  # no file "-"
    assert not list((tmp_path / "tmp").iterdir())


def test_an_image_archive_goes_to_standard_output_and_nothing_else(tmp_path: Path) -> None:
    done = build(tmp_path, "-q", "-o", "type=docker,dest=-")
    assert done.returncode == 0, done.stderr
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:  # -q's image id is not mixed in
        assert "manifest.json" in tar.getnames()


@pytest.mark.parametrize(("flags", "message"), [
    (("-o", "type=local,dest=-"), "a local export is a directory"),
    (("-o", "-", "-o", "type=oci,dest=-"), "only one --output can write to standard output"),
    (("-o", "-", "-o", "type=bogus"), "needs dest=PATH"),
])
def test_streams_that_cannot_be(tmp_path: Path, flags: tuple[str, ...], message: str) -> None:
    done = build(tmp_path, *flags)
    assert done.returncode == 2 and message in done.stderr.decode(), done.stderr
    assert b"Traceback" not in done.stderr
    assert not list((tmp_path / "tmp").iterdir())  # the archive's private dir is gone too


