"""USER's effect on other steps, checked against BuildKit/Docker: WORKDIR's directories, the
groups of a RUN, and heredoc scripts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import layerbuild
from tests.build.conftest import write
from tests.build.kit import busybox, export, make_base
from tests.runtime.rootless import as_user, ensure_user, python_for_user, rootless_home  # noqa: F401

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


GROUPS_DOCKERFILE = """\
FROM base:1
RUN printf 'root:x:0:0::/root:/bin/sh\\napp:x:1001:1002::/home/app:/bin/sh\\n' >> /etc/passwd \\
 && printf 'root:x:0:\\nappgrp:x:1002:\\nstaff:x:50:app\\nwheel:x:10:root\\n' >> /etc/group
USER 1000:1000
RUN id > /out/pair
USER app
RUN id > /out/name
USER app:staff
RUN id > /out/name-group
USER 1000
RUN id > /out/uid
"""


def test_run_groups_match_docker(tmp_path: Path) -> None:
    """The supplementary groups of a RUN, as Docker's builder (BuildKit) sets them; busybox `id`
    prints the kernel's supplementary list (getgroups), so `groups=` shows exactly what was set.

    BuildKit (executor/oci/user.go): GetUser takes `uid:gid` on a fast path with no extra groups;
    any other form goes through moby/sys/user GetExecUser, whose supplementary groups are the
    /etc/group entries listing the user's name, for the `user` form only (none with an explicit
    group). WithUIDGID then calls ensureAdditionalGids, which puts the primary gid first when it is
    missing (since BuildKit v0.12, after containerd). So `USER 1000:1000` does run with
    groups=1000 in Docker: the issue's report describes BuildKit before v0.12. Docker's own
    `docker run` (daemon/oci_linux.go getUser) starts AdditionalGids with the primary gid too."""
    root, base_ctx, ctx = tmp_path / "store", tmp_path / "base", tmp_path / "ctx"
    make_base(base_ctx, root)
    write(ctx, {"Dockerfile": GROUPS_DOCKERFILE})
    layerbuild.build(ctx, root=root, tags=["groups:1"])
    fs = export(root, "groups:1", tmp_path / "fs")
    out = {name: (fs / "out" / name).read_text() for name in ("pair", "name", "name-group", "uid")}
    assert out == {
        "pair": "uid=1000 gid=1000 groups=1000\n",  # no entries for 1000 in the files: ids as given
        # the primary group, then staff (it lists app); busybox prints the kernel's sorted list
        "name": "uid=1001(app) gid=1002(appgrp) groups=50(staff),1002(appgrp)\n",
        "name-group": "uid=1001(app) gid=50(staff) groups=50(staff)\n",  # explicit group: no others
        "uid": "uid=1000 gid=0(root) groups=0(root)\n",  # a uid without an entry: group 0 (moby's default)
    }


def test_run_user_ids_out_of_range_are_refused(tmp_path: Path) -> None:
    """moby/sys/user GetExecUser refuses ids above 2147483647 (ErrRange: "uids and gids must be in
    range 0-2147483647"); the build says so instead of failing inside the sandbox."""
    root, base_ctx, ctx = tmp_path / "store", tmp_path / "base", tmp_path / "ctx"
    make_base(base_ctx, root)
    for user in ("99999999999", "1000:4294967296", "2147483648:0"):
        write(ctx, {"Dockerfile": f"FROM base:1\nUSER {user}\nRUN id\n"})
        with pytest.raises(layerbuild.BuildError, match="uids and gids must be in range 0-2147483647"):
            layerbuild.build(ctx, root=root, tags=["range:1"])


def test_run_command_groups_match_docker_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`run -u` as `docker run -u`: moby's getUser (daemon/oci_linux.go) sets AdditionalGids to the
    primary gid followed by GetExecUser's supplementary groups, and runc calls setgroups with them."""
    from layerbuild.cli.main import main

    root, base_ctx, ctx = tmp_path / "store", tmp_path / "base", tmp_path / "ctx"
    make_base(base_ctx, root)
    write(ctx, {"Dockerfile": GROUPS_DOCKERFILE})
    layerbuild.build(ctx, root=root, tags=["groups:1"])
    capfd.readouterr()
    expected = {
        "1000:1000": "uid=1000 gid=1000 groups=1000\n",
        "app": "uid=1001(app) gid=1002(appgrp) groups=50(staff),1002(appgrp)\n",
        "app:staff": "uid=1001(app) gid=50(staff) groups=50(staff)\n",
        "root": "uid=0(root) gid=0(root) groups=0(root),10(wheel)\n",  # wheel lists root
    }
    for user, line in expected.items():
        code = main(["--root", str(root), "run", "--rm", "-u", user, "groups:1", "id"])
        out, err = capfd.readouterr()
        assert (code, out) == (0, line), (user, err)


def test_heredoc_script_with_a_shebang_runs_from_dev_pipes(tmp_path: Path) -> None:
    """BuildKit (dockerfile2llb/convert.go dispatchRun): a RUN that is one heredoc starting with `#!`
    runs the file `/dev/pipes/NAME` (mode 0755) of a read-only directory mounted at /dev/pipes/;
    the `foo2-run`/`bar2-run` cases of dockerfile_heredoc_test.go testHeredocIndent expect
    "\\n\\tfoo\\n" and "\\nbar\\n" (`<<-` strips the leading tabs)."""
    root, base_ctx, ctx = tmp_path / "store", tmp_path / "base", tmp_path / "ctx"
    make_base(base_ctx, root)
    write(ctx, {"Dockerfile": """\
FROM base:1
RUN <<EOF
#!/bin/sh
echo ok > /out/ok
echo "$0" > /out/argv0
ls -l /dev/pipes/EOF | cut -c1-10 > /out/mode
touch /dev/pipes/other 2> /out/touch || echo refused >> /out/touch
EOF
RUN <<EOF
#!/bin/sh
echo "
\tfoo" > /out/foo2-run
EOF
RUN <<-EOF
#!/bin/sh
echo "
\tbar" > /out/bar2-run
EOF
"""})
    layerbuild.build(ctx, root=root, tags=["pipes:1"])
    out = export(root, "pipes:1", tmp_path / "fs") / "out"
    assert (out / "ok").read_text() == "ok\n"
    assert (out / "argv0").read_text() == "/dev/pipes/EOF\n"
    assert (out / "mode").read_text() == "-rwxr-xr-x\n"
    assert (out / "touch").read_text().endswith("refused\n")  # read-only, as BuildKit mounts it
    assert (out / "foo2-run").read_text() == "\n\tfoo\n"
    assert (out / "bar2-run").read_text() == "\nbar\n"
    assert not (out.parent / "dev" / "pipes").exists()  # the mount left nothing in the layers


ROOTLESS_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
USER 1000:1000
WORKDIR /app/sub
USER 0
RUN <<EOF
#!/bin/sh
stat -c '%u:%g' /app /app/sub > /owners
EOF
CMD ["cat", "/owners"]
"""


def test_workdir_owner_and_heredoc_script_rootless(rootless_home: Path) -> None:  # noqa: F811
    """The same as an unprivileged user: WORKDIR's chown happens in the user namespace (subordinate
    ids), and /dev/pipes is mounted in the sandbox's /dev there too."""
    user = ensure_user()
    ctx = rootless_home / "ctx-semantics"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(ROOTLESS_DOCKERFILE)
    shutil.copy(busybox(), ctx / "busybox")
    for path in (ctx, ctx / "Dockerfile", ctx / "busybox"):
        os.chown(path, user.pw_uid, user.pw_gid)
    python, env = python_for_user(rootless_home)
    lb = [python, "-m", "layerbuild", "--root", str(rootless_home / "store-semantics")]
    built = as_user([*lb, "build", "--progress", "plain", "-t", "sem:1", str(ctx)], env)
    if built.returncode != 0 and "no subordinate ids" in built.stderr:
        pytest.skip("the rootless user has no subordinate ids on this machine")
    assert built.returncode == 0, built.stderr
    ran = as_user([*lb, "run", "--rm", "sem:1"], env)
    assert (ran.returncode, ran.stdout) == (0, "1000:1000\n1000:1000\n"), ran.stderr
