"""The pure parts of layerbuild.remote: frames, the version handshake, targets, the context's copy on a host."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from layerbuild.errors import UsageError
from layerbuild.remote.frames import (
    PROTOCOL,
    FrameReader,
    FrameWriter,
    ProtocolError,
    RemoteError,
    check_hello,
)
from layerbuild.remote.ssh import connection_error, parse_options, parse_target
from layerbuild.remote.sync import Mirror, scan, write_tar


def test_frames_round_trip_with_binary_payloads() -> None:
    buf = io.BytesIO()
    w = FrameWriter(buf)  # type: ignore[arg-type]
    w.send("out", b"\x00\n{not json}\n" * 3, fd=1)
    w.send("exit", code=3)
    buf.seek(0)
    r = FrameReader(buf)  # type: ignore[arg-type]
    header, payload = r.recv()
    assert header == {"t": "out", "fd": 1, "size": 39} and payload == b"\x00\n{not json}\n" * 3
    assert r.expect("exit")[0]["code"] == 3


@pytest.mark.parametrize("raw", [b"garbage\n", b'{"t": "out", "size": 10}\nshort', b'{"t": 1}\n', b'{"t": "x"'])
def test_bad_frames_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameReader(io.BytesIO(raw)).recv()  # type: ignore[arg-type]


def test_the_handshake_says_which_side_to_upgrade() -> None:
    check_hello("1.2.0", {"version": "1.2.0", "protocol": PROTOCOL}, "ssh://h", "m")
    with pytest.raises(RemoteError, match=r"older than this client's 1\.2\.0") as old:
        check_hello("1.2.0", {"version": "1.1.9", "protocol": PROTOCOL}, "ssh://h", "m")
    assert "layerbuild machine upgrade m" in (old.value.hint or "")
    with pytest.raises(RemoteError, match=r"newer than this client's 1\.2\.0") as new:
        check_hello("1.2.0", {"version": "1.10.0", "protocol": PROTOCOL}, "ssh://h", None)
    assert "upgrade layerbuild here to 1.10.0" in (new.value.hint or "")


def test_targets_and_options_parse_as_ssh_urls() -> None:
    t = parse_target("ssh://builder@10.0.0.5:2222")
    assert (t.user, t.host, t.port, t.url) == ("builder", "10.0.0.5", 2222, "ssh://builder@10.0.0.5:2222")
    assert parse_target("root@[::1]:22").url == "ssh://root@[::1]:22"
    assert parse_target("host").destination() == "host"
    for bad in ("tcp://host:2375", "user@", "ssh://a@b:99999", "a b"):
        with pytest.raises(UsageError):
            parse_target(bad)
    assert parse_options(["StrictHostKeyChecking=accept-new"]) == {"StrictHostKeyChecking": "accept-new"}
    with pytest.raises(UsageError):
        parse_options(["nokey"])


@pytest.mark.parametrize(("stderr", "expect"), [
    ("root@h: Permission denied (publickey).", "refused the login"),
    ("Host key verification failed.", "is not known"),
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", "has changed"),
    ("ssh: connect to host h port 22: Connection refused", "refused the connection"),
    ("ssh: Could not resolve hostname nope: Name or service not known", "cannot resolve"),
])
def test_ssh_failures_are_explained(stderr: str, expect: str) -> None:
    err = connection_error(parse_target("root@h"), stderr)
    assert expect in err.message and err.hint


def _tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    out: dict[str, tuple[str, int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("l", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", p.stat().st_mode & 0o7777, "")
            else:
                out[rel] = ("f", p.stat().st_mode & 0o7777, p.read_bytes())
    return out


def _sync(ctx: Path, base: Path) -> tuple[Mirror, list[str]]:
    s = scan(str(ctx), None)
    mirror = Mirror(base, s.context_id)
    if mirror.digest == s.digest:
        return mirror, []
    need = mirror.needed(s.items)
    buf = io.BytesIO()
    if need:
        write_tar(s, need, buf)
        buf.seek(0)
    mirror.apply(s.digest, s.items, buf if need else None)
    return mirror, need


def test_the_hosts_copy_follows_the_context_and_gets_only_what_it_lacks(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "a" / "b").mkdir(parents=True)
    (ctx / "a" / "one.txt").write_text("one")
    (ctx / "a" / "b" / "two.sh").write_text("#!/bin/sh\n")
    os.chmod(ctx / "a" / "b" / "two.sh", 0o755)
    (ctx / "link").symlink_to("a/one.txt")
    (ctx / "skip.log").write_text("ignored")
    (ctx / ".dockerignore").write_text("*.log\n")
    base = tmp_path / "host"
    mirror, need = _sync(ctx, base)
    assert sorted(need) == [".dockerignore", "a/b/two.sh", "a/one.txt"]
    expected = _tree(ctx)
    del expected["skip.log"]
    assert _tree(mirror.ctx) == expected
    assert _sync(ctx, base)[1] == []  # unchanged: nothing asked for
    # an edit sends one file; a rename sends none (the content is there); removals follow
    (ctx / "a" / "one.txt").write_text("uno")
    assert _sync(ctx, base)[1] == ["a/one.txt"]
    os.rename(ctx / "a" / "b" / "two.sh", ctx / "a" / "moved.sh")
    (ctx / "a" / "b").rmdir()
    (ctx / "link").unlink()
    (ctx / "link").mkdir()
    mirror, need = _sync(ctx, base)
    assert need == []
    expected = _tree(ctx)
    del expected["skip.log"]
    assert _tree(mirror.ctx) == expected
    st_here, st_there = (ctx / "a" / "moved.sh").stat(), (mirror.ctx / "a" / "moved.sh").stat()
    assert st_there.st_mtime_ns == st_here.st_mtime_ns  # COPY keeps mtimes: the image is the same


def test_a_damaged_copy_on_the_host_is_sent_again(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("content")
    base = tmp_path / "host"
    mirror, _ = _sync(ctx, base)
    (mirror.ctx / "f.txt").write_text("tampered!")
    (mirror.dir / "digest").unlink()
    assert _sync(ctx, base)[1] == ["f.txt"]
    assert (mirror.ctx / "f.txt").read_text() == "content"
