"""Bad input to `layerbuild build`: a located, readable error, the right exit code, a valid store."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.store import Store
from tests.build.conftest import write
from tests.build.malformed import HANDWRITTEN, mutations


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "file.txt").write_text("served\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(tmp_path / "www"), **k)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def run(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["--root", str(root), "build", "--progress", "plain", *extra, str(ctx)])
    return code, capsys.readouterr().err


def fsck_clean(root: Path) -> None:
    if root.exists():
        with Store.open(root) as store:
            assert store.fsck().ok


CASES = {
    "missing source": ("FROM scratch\nCOPY a.txt /a\nCOPY nope.txt /nope\n", 1, "Dockerfile:3: COPY nope.txt /nope"),
    "outside the context": ("FROM scratch\nCOPY ../secret /x\n", 1, "Dockerfile:2: COPY ../secret /x"),
    "unknown --from stage or image": ("FROM scratch AS builder\nFROM scratch\nCOPY --from=buidler /a /a\n", 2,
                                      "Dockerfile:3:1: no such image: buidler"),
    "unknown base image": ("FROM nosuchimage:1\nCOPY a.txt /\n", 2, "Dockerfile:1:1: no such image: nosuchimage"),
    "bad --chown": ("FROM scratch\nCOPY --chown=nobody: a.txt /a\n", 1, "Dockerfile:2: COPY --chown=nobody:"),
    "syntax error": ('FROM scratch\nCOPY ["a", 1] /x\n', 2, "Dockerfile:2:6: when using JSON array syntax"),
    "unknown instruction": ("FROM scratch\nCOPPY a.txt /a\n", 2, "did you mean COPY?"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_dockerfiles(case: str, ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile, code, text = CASES[case]
    write(ctx, {"Dockerfile": dockerfile, "a.txt": "a"})
    got, err = run(ctx, root, capsys)
    assert got == code, err
    assert text in err, err
    assert "Traceback" not in err
    fsck_clean(root)


def test_unknown_target(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(ctx, {"Dockerfile": "FROM scratch AS builder\nCOPY a.txt /\n", "a.txt": "a"})
    code, err = run(ctx, root, capsys, "--target", "biulder")
    assert code == 2 and "did you mean 'builder'?" in err


def test_add_checksum(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str], server: str) -> None:
    good = "sha256:" + hashlib.sha256(b"served\n").hexdigest()
    write(ctx, {"Dockerfile": f"FROM scratch\nADD --checksum={good} {server}/file.txt /f\n"})
    code, err = run(ctx, root, capsys)
    assert code == 0, err
    bad = "sha256:" + "0" * 64
    write(ctx, {"Dockerfile": f"FROM scratch\nADD --checksum={bad} {server}/file.txt /f\n"})
    code, err = run(ctx, root, capsys)
    assert code == 1 and "Dockerfile:2: ADD --checksum" in err and "checksum" in err.lower()
    fsck_clean(root)


# -- the malformed-input corpus: `parse` and `build` give a located error with a hint, never a crash --


def _check_clean_failure(code: int, err: str) -> None:
    assert "internal error" not in err and "Traceback" not in err, err
    assert code in (0, 1, 2), err
    if code == 2:  # a Dockerfile error (1 is a step that ran and failed, e.g. RUN without a shell)
        # `Dockerfile:L:C: message`, the offending line under it (`  L | ...`), then the hint.
        found = re.search(r"Dockerfile:(\d+):\d+: .*\n +(\d+) \| ", err)
        assert found and found.group(1) == found.group(2), err
        assert "\nhint: " in err, err


def _parse_and_build(data: bytes, ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ctx / "Dockerfile").write_bytes(data)
    code = main(["parse", str(ctx / "Dockerfile")])
    _check_clean_failure(code, capsys.readouterr().err)
    code, err = run(ctx, root, capsys)
    _check_clean_failure(code, err)


@pytest.mark.parametrize("case", sorted(HANDWRITTEN))
def test_malformed_corpus(case: str, ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _parse_and_build(HANDWRITTEN[case], ctx, root, capsys)
    fsck_clean(root)


def test_malformed_mutations(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = mutations()
    assert len(cases) > 100
    for data in cases.values():
        _parse_and_build(data, ctx, root, capsys)
    fsck_clean(root)


LOCATED = {
    "LABEL with invalid UTF-8": (b"FROM scratch\nLABEL a=\xff\xfe\n", "Dockerfile:2:9: invalid UTF-8 in LABEL: byte 0xff"),
    "RUN with invalid UTF-8": (b"FROM scratch\nRUN echo \xc3(\n", "Dockerfile:2:10: invalid UTF-8 in RUN: byte 0xc3"),
    "EXPOSE abc/xyz": (b"FROM scratch\nEXPOSE 80 abc/xyz\n", "Dockerfile:2:11: invalid port 'abc/xyz'"),
    "only global ARGs": (b"ARG A=1\nARG B\n", "Dockerfile:2:1: dockerfile contains no stages to build"),
    "EXPOSE out of range": (b"FROM scratch\nARG P=70000\nEXPOSE $P\n", "Dockerfile:3:8: invalid port range '70000'"),
    "bad --chmod": (b"FROM scratch\nCOPY --chmod=999 a.txt /b\n", "Dockerfile:2:6: invalid --chmod value '999'"),
    "line over 64 KiB": (b"FROM scratch\nLABEL a=" + b"x" * 65536 + b"\n",
                         "Dockerfile:2:1: dockerfile line greater than max allowed size of 65535"),
}


@pytest.mark.parametrize("case", sorted(LOCATED))
def test_located_errors(case: str, ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, text = LOCATED[case]
    write(ctx, {"a.txt": "a"})
    (ctx / "Dockerfile").write_bytes(data)
    code, err = run(ctx, root, capsys)
    assert code == 2 and text in err and "hint: " in err, err
    fsck_clean(root)


def test_invalid_utf8_in_a_comment_is_fine(ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ctx / "Dockerfile").write_bytes(b"FROM scratch\n# caf\xe9\nLABEL a=b\n")
    code, err = run(ctx, root, capsys)
    assert code == 0, err


# -- a Dockerfile that is not a regular file: refused at once (a FIFO would block a plain read) ------


def _special(kind: str, path: Path) -> Iterator[None]:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        yield
        sock.close()
        return
    elif kind == "device":
        path.symlink_to("/dev/zero")  # endless: a read without the check never ends
    yield


PARSE_SPECIAL = {"fifo": "it is a FIFO (named pipe) and nothing was written to it",
                 "directory": "it is a directory", "socket": "it is a socket",
                 "device": "dockerfile larger than max allowed size"}
SPECIAL = {"fifo": "a FIFO (named pipe)", "directory": "a directory", "socket": "a socket", "device": "a character device"}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
@pytest.mark.parametrize("where", ["context", "-f"])
def test_dockerfile_not_a_regular_file(kind: str, where: str, ctx: Path, root: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = ctx / "Dockerfile" if where == "context" else tmp_path / "special"
    extra = () if where == "context" else ("-f", str(path))
    for _ in _special(kind, path):
        code, err = run(ctx, root, capsys, *extra)
        assert code == 2, err
        assert f"it is {SPECIAL[kind]}, not a regular file" in err and "hint: " in err, err
        # `parse` reads pipes and terminals too (`parse /dev/stdin`), once and within the limits.
        assert main(["parse", str(path)]) == 2
        assert PARSE_SPECIAL[kind] in capsys.readouterr().err
    fsck_clean(root)


def test_dockerfile_through_a_symlink(ctx: Path, root: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "real").write_text("FROM scratch\nLABEL a=b\n")
    (ctx / "Dockerfile").symlink_to(tmp_path / "real")
    code, err = run(ctx, root, capsys)
    assert code == 0, err


def test_invalid_utf8_in_a_stage_the_target_does_not_need(ctx: Path, root: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    (ctx / "Dockerfile").write_bytes(b"FROM scratch AS other\nLABEL a=\xff\nFROM scratch AS app\nLABEL a=b\n")
    code, err = run(ctx, root, capsys, "--target", "app")
    assert code == 0, err
    code, err = run(ctx, root, capsys, "--target", "other")
    assert code == 2 and "Dockerfile:2:9: invalid UTF-8 in LABEL: byte 0xff" in err, err


def test_parse_reads_a_pipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    read, write_end = os.pipe()
    os.write(write_end, b"FROM scratch\nLABEL a=b\n")
    os.close(write_end)
    try:
        assert main(["parse", "--json", f"/proc/self/fd/{read}"]) == 0
    finally:
        os.close(read)
    assert '"cmd": "label"' in capsys.readouterr().out
