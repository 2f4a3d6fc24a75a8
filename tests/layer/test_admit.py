"""The door check for archives from outside: what layer writers make passes, crafted escapes are named."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.errors import UnsafeArchiveError
from layerbuild.layer import Compression
from layerbuild.layer.admit import check_layer

from .trees import Spec, build, fresh, trees
from .treeutil import layer_bytes, sha256


def _tar(*members: tuple[str, bytes, str], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Members as (name, type, linkname or content)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(extra)
                tar.addfile(info, io.BytesIO(extra.encode()))
            else:
                info.linkname = extra
                tar.addfile(info)
    return out.getvalue()


F, D, S, H = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


@pytest.mark.parametrize(("members", "message"), [
    ([("../x", F, "x")], "entry '../x' points above the root"),
    ([("a/../../x", F, "x")], "points above the root"),
    ([("/etc/x", F, "x")], "entry '/etc/x' has an absolute path"),
    ([("./", F, "x")], "would replace the root directory"),
    ([("s", S, "/etc"), ("s/passwd", F, "x")], "entry 's/passwd' is written through 's', a symlink"),
    ([("d", D, ""), ("d/s", S, "../.."), ("d/s/x/y", F, "x")], "written through 'd/s'"),
    ([("h", H, "../../etc/passwd")], "entry 'h' points above the root"),
    ([("h", H, "etc/passwd")], "hardlink to 'etc/passwd', which is no earlier entry"),
    ([("a", F, "x"), ("a", D, ""), ("h", H, "a")], "no earlier entry"),  # the file was replaced
    ([("x" * 150 + "/../../y", F, "x")], "points above the root"),  # a pax path
])
def test_escapes_are_refused_and_named(members: list[tuple[str, bytes, str]], message: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=message):
        check_layer(io.BytesIO(_tar(*members)), "layer 1")


def test_the_gnu_long_name_of_an_entry_is_checked_too() -> None:
    data = _tar(("/" + "x" * 150, F, "x"), fmt=tarfile.GNU_FORMAT)
    with pytest.raises(UnsafeArchiveError, match="has an absolute path"):
        check_layer(io.BytesIO(data))


@pytest.mark.parametrize("members", [
    [("s", S, "/etc"), ("t", S, "../../../../x"), ("u", S, "a/../../b")],  # targets resolve in the root
    [("a", F, "x"), ("h", H, "a"), ("h2", H, "./a")],
    [("s", S, "/tmp"), ("s", D, ""), ("s/x", F, "x")],  # the symlink was replaced by a directory
    [("./", D, ""), ("a/", D, ""), ("a/b", F, "x")],
])
def test_what_writers_make_is_accepted(members: list[tuple[str, bytes, str]]) -> None:
    data = _tar(*members)
    assert check_layer(io.BytesIO(data)) == (sha256(data), len(data))


def test_declared_sizes_are_bounded_before_content_is_read() -> None:
    data = _tar(("a", F, "x" * 3000), ("b", F, "y" * 200_000))
    assert check_layer(io.BytesIO(data), max_bytes=len(data))[1] == len(data)
    with pytest.raises(UnsafeArchiveError, match="entry 'b' declares 200000 bytes, more than the 97000 bytes"):
        check_layer(io.BytesIO(data[:8192]), max_bytes=100_000)  # the header says, before any content


@pytest.mark.skipif(os.geteuid() != 0, reason="trees carry owners and device nodes: needs root")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=trees(sparse=False), compression=st.sampled_from(list(Compression)))
def test_every_layer_layerbuild_writes_passes_the_door(tmp_path: Path, specs: list[Spec],
                                                       compression: Compression) -> None:
    src = fresh(tmp_path / "src")
    build(src, specs)
    data, info = layer_bytes(src, compression)
    assert check_layer(io.BytesIO(data)) == (info.diff_id, info.uncompressed_size)
