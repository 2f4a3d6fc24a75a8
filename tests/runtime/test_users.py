"""`USER` values resolved as moby/sys/user GetExecUser resolves them."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.runtime.merged import MergedView
from layerbuild.runtime.spec import SandboxError
from layerbuild.runtime.users import resolve_user


def _view(tmp_path: Path, passwd: str, group: str) -> MergedView:
    etc = tmp_path / "layer" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(passwd)
    (etc / "group").write_text(group)
    return MergedView([tmp_path / "layer"])


def test_numbers_are_ids_never_names(tmp_path: Path) -> None:
    """GetExecUser matches a numeric user only by uid and a numeric group only by gid, even when an
    entry has that number as its name."""
    view = _view(tmp_path, "1000:x:7:7::/seven:/bin/sh\nreal:x:1000:1000::/real:/bin/sh\n",
                 "50:x:60:\nstaff:x:50:real\n")
    user = resolve_user(view, "1000")
    assert (user.uid, user.gid, user.home) == (1000, 1000, "/real")
    assert user.groups == (1000, 50)  # the name it matched ("real") is listed in staff
    assert resolve_user(view, "1000:50").gid == 50


def test_ids_out_of_range(tmp_path: Path) -> None:
    view = _view(tmp_path, "big:x:3000000000:0::/:/bin/sh\n", "")
    for user in ("2147483648", "0:2147483648", "big"):
        with pytest.raises(SandboxError, match="must be in range 0-2147483647"):
            resolve_user(view, user)
    assert resolve_user(view, "2147483647:2147483647").uid == 2147483647
