"""Bad input to `layerbuild build`: a located, readable error, the right exit code, a valid store."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.store import Store
from tests.build.conftest import write


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
    "unknown --chown user": ("FROM scratch\nCOPY --chown=nobody a.txt /a\n", 1, "Dockerfile:2: COPY --chown=nobody"),
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
