"""USER's effect on other steps, checked against BuildKit/Docker: WORKDIR's directories, the
groups of a RUN, and heredoc scripts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import layerbuild
from tests.build.conftest import write
from tests.build.kit import export, make_base

pytestmark = pytest.mark.integration


def _owner(top: Path, path: str) -> tuple[int, int]:
    st = os.lstat(top / path.lstrip("/"))
    return st.st_uid, st.st_gid


def test_workdir_dirs_are_owned_by_the_user(tmp_path: Path) -> None:
    """BuildKit's dispatchWorkdir (frontend/dockerfile/dockerfile2llb/convert.go) makes the directory
    with `llb.Mkdir(wd, 0755, llb.WithParents(true), llb.WithUser(d.image.Config.User))`; its file op
    (solver/llbsolver/file/user_linux.go readUser) takes a name's uid/gid from /etc/passwd, a group
    name from /etc/group, and a number alone as both uid and gid. Only directories it makes are
    chowned; ones that exist keep their owner."""
    root, base_ctx, ctx = tmp_path / "store", tmp_path / "base", tmp_path / "ctx"
    make_base(base_ctx, root)
    write(ctx, {"Dockerfile": """\
FROM base:1
RUN echo 'app:x:1001:1002::/home/app:/bin/sh' >> /etc/passwd && echo 'staff:x:50:' >> /etc/group
WORKDIR /rootdir
USER app
WORKDIR /w1/named/deep
USER app:staff
WORKDIR /grouped
USER 1000
WORKDIR /numeric
USER 1000:2000
WORKDIR /pair
USER 7:staff
WORKDIR /idgroup
"""})
    layerbuild.build(ctx, root=root, tags=["wd:1"])
    fs = export(root, "wd:1", tmp_path / "fs")
    assert _owner(fs, "/rootdir") == (0, 0)
    assert _owner(fs, "/w1") == (0, 0)  # in the base already: untouched
    assert _owner(fs, "/w1/named") == (1001, 1002)
    assert _owner(fs, "/w1/named/deep") == (1001, 1002)
    assert _owner(fs, "/grouped") == (1001, 50)
    assert _owner(fs, "/numeric") == (1000, 1000)
    assert _owner(fs, "/pair") == (1000, 2000)
    assert _owner(fs, "/idgroup") == (7, 50)


def test_workdir_user_is_part_of_the_cache_key(tmp_path: Path) -> None:
    """The same WORKDIR under another USER makes differently owned directories: no cache hit."""
    root, base_ctx, ctx = tmp_path / "store", tmp_path / "base", tmp_path / "ctx"
    make_base(base_ctx, root)
    write(ctx, {"Dockerfile": "FROM base:1\nUSER 1000\nWORKDIR /made\n"})
    layerbuild.build(ctx, root=root, tags=["wd:1"])
    write(ctx, {"Dockerfile": "FROM base:1\nUSER 2000\nWORKDIR /made\n"})
    second = layerbuild.build(ctx, root=root, tags=["wd:2"])
    workdir = [s for s in second.steps if s.instruction.startswith("WORKDIR")]
    assert len(workdir) == 1 and not workdir[0].cached
    assert _owner(export(root, "wd:2", tmp_path / "fs"), "/made") == (2000, 2000)
