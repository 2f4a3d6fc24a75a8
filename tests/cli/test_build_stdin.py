"""`build -f - DIR` and `build -` as docker reads them: the Dockerfile, or a tar archive of the context
(plain, gzip, bzip2, xz, told by content), from standard input. The archive is untrusted: what would
escape its destination is refused and nothing of it is kept; what it holds is cached as a directory
context's files are."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from layerbuild.cli.main import main
from layerbuild.errors import LayerbuildError
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.kit import export, make_base
from tests.conftest import REPO, fsck_problems

BASE = "base:1"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the busybox base `base:1`, shared by the module's builds."""
    base = tmp_path_factory.mktemp("stdin")
    make_base(base / "basectx", base / "store", BASE)
    return base / "store"


def tar_bytes(files: dict[str, Any], compression: str = "tar") -> bytes:
    """An archive made with Python's tarfile: name → text (a file), or a TarInfo to add as it is."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, value in files.items():
            if isinstance(value, tarfile.TarInfo):
                tar.addfile(value, io.BytesIO(b"\0" * value.size) if value.isreg() else None)
                continue
            data = value.encode() if isinstance(value, str) else value
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if compression == "gzip":
        return gzip.compress(raw)
    if compression == "bzip2":
        return bz2.compress(raw)
    return lzma.compress(raw) if compression == "xz" else raw


def build(root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], stdin: bytes, *argv: str,
          progress: str = "quiet") -> tuple[int, dict[str, Any] | None, str]:
    """`layerbuild build ARGV...` in-process with `stdin` as its standard input (a file, as `< file`):
    (exit code, the report, stderr)."""
    feed = tmp_path / f"stdin-{len(list(tmp_path.iterdir()))}"
    feed.write_bytes(stdin)
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    saved = sys.stdin
    with open(feed, encoding="utf-8") as sys.stdin:
        try:
            code = main(["--root", str(root), "build", "--progress", progress, "--report", str(report), *argv])
        finally:
            sys.stdin = saved
    _, err = capfd.readouterr()
    return code, json.loads(report.read_text()) if report.exists() else None, err


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["instruction"]: s for s in report["steps"] if s["kind"] in ("exec", "copy")}


def scratch_left(root: Path) -> list[str]:
    return [e.name for e in os.scandir(root / "tmp") if e.name.startswith("context-")]


APP = f"FROM {BASE}\nCOPY a.txt /a.txt\nRUN cat /a.txt > /seen\nCOPY sub/ /sub/\nRUN ls /sub > /list\n"


@pytest.mark.integration
@pytest.mark.parametrize("compression", ["tar", "gzip", "bzip2", "xz"])
def test_context_archive_on_stdin_builds_and_caches_as_a_directory(
        root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], compression: str) -> None:
    files = {"Dockerfile": APP, "a.txt": f"a-{compression}\n", "sub/b.txt": "b\n", "sub/c.txt": "c\n"}
    tag = f"tarctx-{compression}:1"
    code, report, err = build(root, tmp_path, capfd, tar_bytes(files, compression), "-t", tag, "-")
    assert code == 0, err
    assert report is not None and report["summary"]["executed"] == 4
    out = export(root, tag, tmp_path / "out")
    assert (out / "seen").read_text() == f"a-{compression}\n" and (out / "list").read_text() == "b.txt\nc.txt\n"
    # The same archive again: every step from the cache.
    code, report, err = build(root, tmp_path, capfd, tar_bytes(files, compression), "-t", tag, "-")
    assert code == 0, err
    assert report is not None and report["summary"]["cached"] == 4 and report["summary"]["executed"] == 0
    # One file changed: only what reads it runs, and the reason names it.
    files["sub/c.txt"] = "c2\n"
    code, report, err = build(root, tmp_path, capfd, tar_bytes(files, compression), "-t", tag, "-")
    assert code == 0, err
    assert report is not None
    by = steps(report)
    assert by["COPY a.txt /a.txt"]["cached"] and by["RUN cat /a.txt > /seen"]["cached"]
    assert not by["COPY sub/ /sub/"]["cached"] and "sub/c.txt" in by["COPY sub/ /sub/"]["reason"]
    assert not by["RUN ls /sub > /list"]["cached"]
    assert scratch_left(root) == []


@pytest.mark.integration
def test_archive_context_keys_equal_a_directory_context(root: Path, tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    """The same files as a directory and as an archive: the second build is all cache hits."""
    files = {"Dockerfile": APP, "a.txt": "same\n", "sub/b.txt": "b\n"}
    ctx = tmp_path / "dirctx"
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
        (ctx / name).chmod(0o644)
    code, report, err = build(root, tmp_path, capfd, b"", "-t", "dir:1", str(ctx))
    assert code == 0 and report is not None and report["summary"]["executed"] == 4, err
    code, report, err = build(root, tmp_path, capfd, tar_bytes(files), "-t", "tar:1", "-")
    assert code == 0 and report is not None, err
    assert report["summary"]["executed"] == 0 and report["summary"]["cached"] == 4
    with Store.open(root) as store:
        assert resolve_image(store, "dir:1").config.diff_ids == resolve_image(store, "tar:1").config.diff_ids


@pytest.mark.integration
def test_dockerfile_named_inside_the_archive_and_no_dockerignore(root: Path, tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    files = {"ci/Dockerfile.ci": f"FROM {BASE}\nCOPY --exclude=.wh.* . /ctx/\nRUN --mount=type=bind,target=/c ls -a /c > /listed\n",
             ".dockerignore": "secret.txt\n", "secret.txt": "listed\n", ".wh.kept": "a plain file\n",
             "Dockerfile": "FROM scratch\nthis is not the one\n"}
    code, _, err = build(root, tmp_path, capfd, tar_bytes(files, "gzip"), "-t", "named:1", "-f",
                         "ci/Dockerfile.ci", "-", progress="plain")
    assert code == 0, err
    assert "the .dockerignore in the context archive was not applied" in err
    out = export(root, "named:1", tmp_path / "out")
    # BuildKit applies no .dockerignore to an archive context: what the archive holds is the context.
    assert (out / "ctx" / "secret.txt").read_text() == "listed\n"
    assert (out / "ctx" / "ci" / "Dockerfile.ci").exists()
    # A context archive is no layer: a `.wh.` name is a file like any other.
    assert ".wh.kept" in (out / "listed").read_text().split()


@pytest.mark.integration
def test_dockerfile_errors_name_it_as_given(root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = build(root, tmp_path, capfd, tar_bytes({"sub/Dockerfile": "FROM scratch\nCOPPY a b\n"}), "-f",
                         "sub/Dockerfile", "-")
    assert code == 2 and "error: sub/Dockerfile:2:1: unknown instruction: COPPY" in err, err
    code, _, err = build(root, tmp_path, capfd, tar_bytes({"a.txt": "a"}), "-")
    assert code == 2 and "the context archive on standard input has no Dockerfile" in err, err
    code, _, err = build(root, tmp_path, capfd, tar_bytes({"a.txt": "a"}), "-f", "nope", "-")
    assert code == 2 and "has no nope" in err, err
    # A Dockerfile that is a link out of the archive is not read from the host.
    link = tarfile.TarInfo("Dockerfile")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/hostname"
    code, _, err = build(root, tmp_path, capfd, tar_bytes({"Dockerfile": link}), "-")
    assert code == 2 and "has no Dockerfile" in err, err
    link.linkname = "../../../../../../../etc/hostname"
    code, _, err = build(root, tmp_path, capfd, tar_bytes({"Dockerfile": link}), "-")
    assert code == 2 and "has no Dockerfile" in err, err
    assert "Traceback" not in err and scratch_left(root) == []


@pytest.mark.integration
def test_dockerfile_on_stdin_with_a_context_dir(root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
                                               ) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("from-dir\n")
    (ctx / "skip.txt").write_text("ignored\n")
    (ctx / ".dockerignore").write_text("skip.txt\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nnot this one\n")
    df = f"FROM {BASE}\nCOPY . /ctx/\nRUN cat /ctx/a.txt > /seen\n"
    code, report, err = build(root, tmp_path, capfd, df.encode(), "-t", "dfstdin:1", "-f", "-", str(ctx))
    assert code == 0 and report is not None, err
    out = export(root, "dfstdin:1", tmp_path / "out")
    assert (out / "seen").read_text() == "from-dir\n"
    assert not (out / "ctx" / "skip.txt").exists()  # the context's .dockerignore applies
    code, report, err = build(root, tmp_path, capfd, df.encode(), "-t", "dfstdin:1", "-f", "-", str(ctx))
    assert code == 0 and report is not None and report["summary"]["executed"] == 0, err
    # Another Dockerfile on stdin for the same context: the miss says what changed, against the last one.
    df2 = df.replace("> /seen", "> /seen2")
    code, report, err = build(root, tmp_path, capfd, df2.encode(), "-t", "dfstdin:1", "-f", "-", str(ctx))
    assert code == 0 and report is not None, err
    run = steps(report)["RUN cat /ctx/a.txt > /seen2"]
    assert not run["cached"] and "no earlier build" not in run["reason"], run
    assert steps(report)["COPY . /ctx/"]["cached"]


@pytest.mark.integration
def test_dockerfile_as_the_context_has_no_context(root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
                                                 ) -> None:
    code, _, err = build(root, tmp_path, capfd, f"FROM {BASE}\nRUN echo ok > /ok\n".encode(), "-t", "noctx:1", "-")
    assert code == 0, err
    assert (export(root, "noctx:1", tmp_path / "out") / "ok").read_text() == "ok\n"
    (tmp_path / "a.txt").write_text("not in any context\n")
    code, _, err = build(root, tmp_path, capfd, f"FROM {BASE}\nCOPY a.txt /\n".encode(), "-")
    assert code == 1 and "'a.txt': not found in the build context" in err, err
    assert "the build has no context: its Dockerfile came from standard input" in err
    code, _, err = build(root, tmp_path, capfd, f"FROM {BASE}\nRUN --mount=type=bind,source=a.txt,target=/a true\n"
                         .encode(), "-")
    assert code != 0 and "not found in the build context" in err and "has no context" in err, err


@pytest.mark.parametrize(("stdin", "argv", "message"), [
    (b"FROM scratch\n", ("-f", "-", "-"),
     "invalid argument: can't use stdin for both build context and dockerfile"),
    (b"FROM scratch\n", ("-f", "Dockerfile", "-"),
     "ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles"),
    (b"", ("-",), "standard input is empty"),
    (b"", ("-f", "-", "."), "the Dockerfile on standard input is empty"),
])
def test_stdin_refusals_in_docker_s_words(tmp_path: Path, capfd: pytest.CaptureFixture[str], stdin: bytes,
                                          argv: tuple[str, ...], message: str) -> None:
    code, _, err = build(tmp_path / "store", tmp_path, capfd, stdin, *argv)
    assert code == 2 and f"error: {message}" in err and "hint: " in err, err


def _entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, linkname, size, 0o644
    return info


@pytest.mark.integration
@pytest.mark.parametrize(("entries", "named"), [
    ({"abs": _entry("/tmp/escaped-abs")}, "'/tmp/escaped-abs' has an absolute path"),
    ({"up": _entry("../escaped-up")}, "'../escaped-up' points above the root"),
    ({"link": _entry("out", tarfile.SYMTYPE, "/tmp"), "through": _entry("out/escaped-through")},
     "'out/escaped-through' is written through 'out', a symlink of the same archive"),
    ({"hard": _entry("h", tarfile.LNKTYPE, "/etc/passwd")}, "'h' is a hardlink to '/etc/passwd', which is no earlier"),
    ({"dev": _entry("null", tarfile.CHRTYPE)}, "'null' is a device node"),
])
def test_hostile_context_archives_are_refused_and_nothing_is_kept(
        root: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], entries: dict[str, tarfile.TarInfo],
        named: str) -> None:
    files: dict[str, Any] = {"Dockerfile": f"FROM {BASE}\nCOPY . /\n", **entries}
    code, _, err = build(root, tmp_path, capfd, tar_bytes(files), "-t", "hostile:1", "-")
    assert code == 1 and "the context archive on standard input: entry " + named in err, err
    assert "Traceback" not in err
    for name in ("/tmp/escaped-abs", "/tmp/escaped-through"):
        assert not os.path.lexists(name)
    assert scratch_left(root) == []  # and the unpacked part went with its scratch directory
    with Store.open(root) as store, pytest.raises(LayerbuildError):
        resolve_image(store, "hostile:1")


@pytest.mark.integration
def test_a_decompression_bomb_fails_at_its_header(small_disk: Path, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """64 MiB of zeros gzip to 64 kB; on a 32 MiB disk the entry is refused before it is inflated."""
    bomb = _entry("zeros", size=64 << 20)
    data = tar_bytes({"Dockerfile": "FROM scratch\nCOPY zeros /\n", "zeros": bomb}, "gzip")
    assert len(data) < 1 << 20
    store_root = small_disk / "store"
    code, _, err = build(store_root, tmp_path, capfd, data, "-")
    assert code == 1 and "entry 'zeros' declares 67108864 bytes, more than the" in err, err
    assert scratch_left(store_root) == [] and fsck_problems(store_root) == []


@pytest.mark.integration
def test_a_real_pipe_into_build_dash(root: Path, tmp_path: Path) -> None:
    """`tar | layerbuild build -` through a pipe, in a process of its own, and `-f -` the same way."""
    data = tar_bytes({"Dockerfile": f"FROM {BASE}\nCOPY a.txt /\n", "a.txt": "piped\n"}, "xz")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "layerbuild", "--root", str(root), "build", "-q"]
    done = subprocess.run([*base, "-t", "piped:1", "-"], input=data, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert (export(root, "piped:1", tmp_path / "out") / "a.txt").read_text() == "piped\n"
    with contextlib.chdir(tmp_path):
        (tmp_path / "b.txt").write_text("dir\n")
        done = subprocess.run([*base, "-t", "piped:2", "-f", "-", "."], input=f"FROM {BASE}\nCOPY b.txt /\n".encode(),
                              capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert (export(root, "piped:2", tmp_path / "out") / "b.txt").read_text() == "dir\n"


def test_stdin_that_is_a_terminal_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pty

    parent, child = pty.openpty()
    try:
        with open(child, encoding="utf-8", closefd=False) as tty:
            monkeypatch.setattr(sys, "stdin", tty)
            code = main(["--root", str(tmp_path / "store"), "build", "-"])
    finally:
        os.close(parent)
        os.close(child)
    err = capfd.readouterr().err
    assert code == 2 and "error: standard input is a terminal" in err, err

