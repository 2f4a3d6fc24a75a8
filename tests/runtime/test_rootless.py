"""Rootless: an unprivileged user runs RUN-style steps, mapped to root inside a user namespace."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.runtime.rootless import as_user, python_for_user, rootless_home  # noqa: F401

pytestmark = pytest.mark.integration

SCRIPT = r"""
import io, json, os, sys
from pathlib import Path
from layerbuild.image import resolve_image
from layerbuild.runtime import ProcessSpec, lower_dirs_for, run_step
from layerbuild.image import import_rootfs
from layerbuild.store import Store

home = Path(sys.argv[1])
with Store.open(home / "root") as store:
    with open(home / "busybox.tar", "rb") as f:
        import_rootfs(store, f, "busybox")
    lowers = lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)
out = {}
for mode in ("overlay", "copy"):
    scratch = home / "root" / "tmp" / mode
    script = ("id -u; echo $$; grep ' / ' /proc/self/mounts | cut -d' ' -f3; ls /proc | grep -c '^[0-9]';"
              "rm /bin/ls; echo x > /tmp/f")
    res = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("/bin/sh", "-c", script)),
                   rootfs=mode)
    out[mode] = {"code": res.exit_code, "out": res.output_tail.decode(), "error": res.error,
                 "upper": str(scratch / "upper")}
print(json.dumps(out))
"""


def test_rootless_overlay_and_copy(rootless_home: Path, busybox_rootfs_tar: bytes) -> None:  # noqa: F811
    (rootless_home / "busybox.tar").write_bytes(busybox_rootfs_tar)
    (rootless_home / "step.py").write_text(SCRIPT)
    python, env = python_for_user(rootless_home)
    proc = as_user([python, str(rootless_home / "step.py"), str(rootless_home)], env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    for mode, fs in (("overlay", "overlay"), ("copy", None)):
        res = results[mode]
        lines = res["out"].split()
        assert res["code"] == 0, res
        assert lines[0] == "0" and lines[1] == "1"  # root inside, PID 1
        if fs is not None:
            assert lines[2] == fs
        else:
            assert lines[2] != "overlay"
        assert int(lines[3]) <= 3
        upper = Path(res["upper"])
        st = os.lstat(upper / "bin" / "ls")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert (upper / "tmp" / "f").read_text() == "x\n"
        assert os.stat(upper / "tmp" / "f").st_uid != 0  # owned by the unprivileged user outside
