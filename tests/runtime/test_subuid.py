"""Rootless with subordinate ids: USER steps keep their owners, the layers equal a root build's, trees
owned by subordinate ids can be removed, and without a range a step that needs one says how to add it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.store import idmap
from layerbuild.store.snapshots import tree_size
from tests.conftest import REPO
from tests.runtime.rootless import USER, as_user, ensure_user, python_for_user, rootless_home  # noqa: F401

DOCKERFILE = """\
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /etc /tmp /home/app && chmod 1777 /tmp \\
 && printf 'root:x:0:0:root:/root:/bin/sh\\napp:x:1000:1000:app:/home/app:/bin/sh\\n' > /etc/passwd \\
 && printf 'root:x:0:\\napp:x:1000:\\nstaff:x:50:app\\n' > /etc/group \\
 && chown app:app /home/app && chmod 700 /home/app
USER app
RUN echo secret > /home/app/private && chmod 600 /home/app/private \\
 && mkdir /home/app/sub && echo made > /home/app/sub/file && chmod 700 /home/app/sub && id -G > /home/app/groups
RUN --mount=type=cache,target=/cache,uid=1000,gid=1000 echo cached > /cache/c && cp /cache/c /home/app/c
RUN --mount=type=cache,target=/home/app/.cache,uid=1000 touch /home/app/.cache/x && echo ok > /home/app/after
WORKDIR /home/app/work/deep
COPY --chown=app:staff Dockerfile /home/app/Dockerfile
USER root
RUN rm /home/app/sub/file

FROM base
COPY --from=base /home/app/private /copied
ADD owned.tar /added/
"""


# --- the id ranges, without namespaces ---------------------------------------------------------------


def test_read_ranges_matches_name_or_uid(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text("alice:100000:65536\n# comment\n1005:300000:10\nbob:200000:65536\nalice:bad:1\nalice:400000:5\n")
    assert idmap.read_ranges(str(path), "alice", 1004) == [(100000, 65536), (400000, 5)]
    assert idmap.read_ranges(str(path), "carol", 1005) == [(300000, 10)]
    assert idmap.read_ranges(str(path), "dave", 1006) == []
    assert idmap.read_ranges(str(tmp_path / "missing"), "alice", 1004) == []


def test_mapping_puts_the_caller_at_zero_then_the_ranges() -> None:
    ids = idmap.IdMap(idmap._ranges(1001, [(100000, 65536), (400000, 5)]), idmap._ranges(1001, [(100000, 10)]),
                      "/usr/bin/newuidmap", "/usr/bin/newgidmap")
    assert ids.uid_args() == ["0", "1001", "1", "1", "100000", "65536", "65537", "400000", "5"]
    assert ids.size() == (65542, 11)
    assert ids.has(1000, 10) and ids.has(65541, 0)
    assert not ids.has(65542, 0) and not ids.has(0, 11)
    assert idmap.single_map().single and idmap.single_map().size() == (1, 1)


# --- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subid_range() -> Iterator[None]:
    """Give the test user a subordinate range where it has none, and take exactly that line back out."""
    user = ensure_user()
    if shutil.which("newuidmap") is None or shutil.which("newgidmap") is None:
        pytest.skip("needs newuidmap and newgidmap (Debian's uidmap)")
    added: dict[str, str] = {}
    created = {p for p in (idmap.SUBUID, idmap.SUBGID) if not os.path.exists(p)}
    for path in (idmap.SUBUID, idmap.SUBGID):
        if idmap.read_ranges(path, USER, user.pw_uid):
            continue
        ends = [100000]
        with contextlib.suppress(FileNotFoundError):
            for line in Path(path).read_text().splitlines():
                fields = line.split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    ends.append(int(fields[1]) + int(fields[2]))
        line = f"{USER}:{max(ends)}:65536\n"
        with open(path, "a") as f:
            f.write(line)
        added[path] = line
    yield
    for path, line in added.items():
        text = Path(path).read_text().replace(line, "", 1)
        if path in created and not text:
            os.unlink(path)
        else:
            Path(path).write_text(text)


@pytest.fixture
def user_without_subids(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A throw-away unprivileged user with no subordinate ids (a system user gets none) and a home."""
    ensure_user()
    name = f"lbnosub{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        if idmap.read_ranges(idmap.SUBUID, name, -1):
            pytest.skip("this system gives system users subordinate ids")
        home = Path(f"/tmp/{name}")
        home.mkdir(mode=0o755)
        shutil.chown(home, name, name)
        yield name, home
    finally:
        shutil.rmtree(f"/tmp/{name}", ignore_errors=True)
        subprocess.run(["userdel", name], check=False, capture_output=True)


def _context(where: Path, owner: str, dockerfile: str = DOCKERFILE) -> Path:
    ctx = where / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", ctx / "busybox")
    with tarfile.open(ctx / "owned.tar", "w") as tar:  # an archive for ADD, its file owned by 1000:50
        info = tarfile.TarInfo("x/file")
        info.uid, info.gid, info.mode, info.size, info.mtime = 1000, 50, 0o640, 2, 1000
        tar.addfile(info, io.BytesIO(b"x\n"))
    for path in (ctx, ctx / "Dockerfile", ctx / "busybox", ctx / "owned.tar"):
        shutil.chown(path, owner, owner)
    return ctx


def _layers(archive: Path) -> tuple[list[str], list[list[tuple[str, int, int, int]]]]:
    """The diff_ids of a saved (docker format) image and, per layer, its entries' owners and modes."""
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        config = json.load(outer.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        entries = []
        for name in manifest["Layers"]:
            data = outer.extractfile(name).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                entries.append([(m.name, m.uid, m.gid, m.mode) for m in layer.getmembers()])
    return config["rootfs"]["diff_ids"], entries


# --- with subordinate ids -----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_rootless_user_steps_keep_owners_like_a_root_build(
    subid_range: None, rootless_home: Path, tmp_path: Path  # noqa: F811
) -> None:
    ctx = _context(rootless_home, USER)
    python, env = python_for_user(rootless_home)
    env["SOURCE_DATE_EPOCH"] = "0"
    lb = [python, "-m", "layerbuild", "--root", str(rootless_home / "store-subid")]
    built = as_user([*lb, "build", "--progress", "plain", "-t", "owned:1", str(ctx)], env)
    assert built.returncode == 0, built.stderr
    assert list((rootless_home / "store-subid" / "tmp").iterdir()) == []  # scratch trees of subids removed
    saved = rootless_home / "owned.tar"
    done = as_user([*lb, "save", "owned:1", "-o", str(saved)], env)
    assert done.returncode == 0, done.stderr
    diff_ids, layers = _layers(saved)
    owners: dict[str, tuple[int, int, int]] = {}
    for layer in layers:  # as the layer that made each entry has it
        for entry, uid, gid, mode in layer:
            owners.setdefault(entry, (uid, gid, mode))
    assert owners["home/app"] == (1000, 1000, 0o700)
    assert owners["home/app/private"] == (1000, 1000, 0o600)  # read by the writer although 0600
    assert owners["home/app/sub"] == (1000, 1000, 0o700)
    assert owners["home/app/Dockerfile"] == (1000, 50, 0o644)  # COPY --chown=app:staff
    assert owners["etc/passwd"] == (0, 0, 0o644)  # made by container root, not the caller's uid
    assert "home/app/sub/.wh.file" in owners  # the root step deleted inside app's 0700 dir
    assert owners["copied"] == (1000, 1000, 0o600)  # COPY --from keeps the stage's owners
    assert owners["added/x/file"] == (1000, 50, 0o640)  # ADD of a local archive keeps its owners
    assert owners["home/app/c"][:2] == (1000, 1000)  # the cache mount was the user's to write
    assert owners["home/app/after"][:2] == (1000, 1000)  # a mount inside app's 0700 home left it app's
    assert owners["home/app/work/deep"] == (1000, 1000, 0o755)  # WORKDIR: made as USER app, as BuildKit does
    assert [o for n, o in owners.items() if n.startswith("home/app/work")] == [(1000, 1000, 0o755)] * 2

    # Inside a container the files show their owners, and the user can read its 0600 file.
    ran = as_user([*lb, "run", "--rm", "owned:1", "sh", "-c",
                   "stat -c '%u:%g %n' /home/app/private /home/app/sub /home/app/Dockerfile /copied; "
                   "cat /home/app/groups"], env)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[:4] == ["1000:1000 /home/app/private", "1000:1000 /home/app/sub", "1000:50 /home/app/Dockerfile",
                         "1000:1000 /copied"]
    assert lines[-1].split() == ["1000", "50"]  # the RUN as app had its supplementary group
    as_app = as_user([*lb, "run", "--rm", "-u", "1000", "owned:1", "sh", "-c", "id -u; cat /home/app/private"], env)
    assert as_app.returncode == 0, as_app.stderr
    assert as_app.stdout.split() == ["1000", "secret"]

    # The same Dockerfile built as root gives the same layers.
    root_store = tmp_path / "root-store"
    root_env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "PYTHONPATH": str(REPO)}
    as_root = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root_store), "build", "-t", "owned:1",
                              str(ctx)], capture_output=True, text=True, env=root_env, timeout=120)
    assert as_root.returncode == 0, as_root.stderr
    root_saved = tmp_path / "root.tar"
    subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root_store), "save", "owned:1", "-o",
                    str(root_saved)], check=True, env=root_env, timeout=60)
    root_ids, root_layers = _layers(root_saved)
    assert root_layers == layers
    assert root_ids == diff_ids

    # So does the copied rootfs (for hosts without overlayfs), rootless.
    copy_lb = [python, "-m", "layerbuild", "--root", str(rootless_home / "store-copy")]
    copied = as_user([*copy_lb, "build", "-q", "-t", "owned:1", str(ctx)], {**env, "LAYERBUILD_ROOTFS": "copy"})
    assert copied.returncode == 0, copied.stderr
    copy_saved = rootless_home / "copy.tar"
    done = as_user([*copy_lb, "save", "owned:1", "-o", str(copy_saved)], env)
    assert done.returncode == 0, done.stderr
    assert _layers(copy_saved) == (diff_ids, layers)


@pytest.mark.integration
def test_rootless_containers_and_snapshots_of_subids_are_removed(
    subid_range: None, rootless_home: Path  # noqa: F811
) -> None:
    ctx = _context(rootless_home, USER, "\n".join(DOCKERFILE.splitlines()[:10]) + "\n")
    python, env = python_for_user(rootless_home)
    store = rootless_home / "store-rm"
    lb = [python, "-m", "layerbuild", "--root", str(store)]
    built = as_user([*lb, "build", "-q", "-t", "rm:1", str(ctx)], env)
    assert built.returncode == 0, built.stderr
    name = f"c{uuid.uuid4().hex[:8]}"
    ran = as_user([*lb, "run", "--name", name, "-u", "app", "rm:1", "sh", "-c",
                   "mkdir -p /home/app/x/y && echo z > /home/app/x/y/z && chmod 500 /home/app/x"], env)
    assert ran.returncode == 0, ran.stderr
    owned = [p for p in store.rglob("*") if not p.is_symlink() and p.lstat().st_uid >= 100000]
    assert owned  # the container's upper dir and the snapshots hold files of subordinate ids
    removed = as_user([*lb, "rm", name], env)
    assert removed.returncode == 0, removed.stderr
    script = ("import sys\nfrom layerbuild.store import Store\n"
              "with Store.open(sys.argv[1]) as s:\n"
              "    print(sum(s.snapshots.size(d) for d in s.snapshots.diff_ids()))\n"
              "    for d in list(s.snapshots.diff_ids()):\n"
              "        assert s.snapshots.remove(d)\n")
    sizes = sum(tree_size(p) for p in (store / "snapshots").iterdir())  # as root, who reads everything
    dropped = as_user([python, "-c", script, str(store)], env)
    assert dropped.returncode == 0, dropped.stderr
    assert int(dropped.stdout) == sizes  # app's 0700 directories counted too
    left = [p for p in store.rglob("*") if not p.is_symlink() and p.lstat().st_uid >= 100000]
    assert left == []
    assert not any((store / "snapshots").iterdir())


# --- without subordinate ids: the single-id mapping ---------------------------------------------------


@pytest.mark.integration
def test_without_subids_a_step_needing_another_id_says_how_to_add_a_range(
    user_without_subids: tuple[str, Path]
) -> None:
    name, home = user_without_subids
    steps = "\n".join(DOCKERFILE.splitlines()[:3])
    python, env = python_for_user(home, name)
    lb = [python, "-m", "layerbuild", "--root", str(home / "store")]
    hint = f"usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}"

    ctx = _context(home, name, steps + "\nUSER 1000\nRUN id\n")
    failed = as_user([*lb, "build", "-q", str(ctx)], env, name)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr and "internal error" not in failed.stderr
    assert "needs uid 1000" in failed.stderr and "no subordinate ids" in failed.stderr
    assert "/etc/subuid" in failed.stderr and "/etc/subgid" in failed.stderr and hint in failed.stderr

    (ctx / "Dockerfile").write_text(steps + "\nRUN touch /x && chown 1000 /x\n")
    failed = as_user([*lb, "build", "-q", str(ctx)], env, name)
    assert failed.returncode == 1
    assert "Invalid argument" in failed.stderr and hint in failed.stderr

    # Steps that need only uid 0 still work, and so does a container as root.
    (ctx / "Dockerfile").write_text(steps + "\nRUN echo ok > /ok\n")
    built = as_user([*lb, "build", "-q", "-t", "single:1", str(ctx)], env, name)
    assert built.returncode == 0, built.stderr
    ran = as_user([*lb, "run", "--rm", "single:1", "sh", "-c", "id -u; cat /ok"], env, name)
    assert ran.stdout.split() == ["0", "ok"], ran.stderr
    ran = as_user([*lb, "run", "--rm", "-u", "1000", "single:1", "id"], env, name)
    assert ran.returncode == 125 and hint in ran.stderr

    # A base whose files belong to uid 1000 cannot be unpacked with their owners: refused clearly.
    rootfs = home / "owned-rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("home/app/file")
        info.uid = info.gid = 1000
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    shutil.chown(rootfs, name, name)
    imported = as_user([*lb, "import", str(rootfs), "owned:1"], env, name)
    assert imported.returncode == 0, imported.stderr
    (ctx / "Dockerfile").write_text("FROM owned:1\nCOPY busybox /busybox\nRUN [\"/busybox\", \"true\"]\n")
    failed = as_user([*lb, "build", "-q", str(ctx)], env, name)
    assert failed.returncode == 1
    assert "home/app/file" in failed.stderr and "needs uid 1000" in failed.stderr and hint in failed.stderr
    assert "Traceback" not in failed.stderr and "internal error" not in failed.stderr


BAD_RANGE = r"""
import sys
from pathlib import Path
from layerbuild.errors import LayerbuildError
from layerbuild.image import import_rootfs, resolve_image
from layerbuild.runtime import ProcessSpec, lower_dirs_for, run_step, sandbox
from layerbuild.runtime.merged import place_mounts
from layerbuild.store import Store, idmap

home = Path(sys.argv[1])
with Store.open(home / "root-bad") as store:
    with open(home / "busybox.tar", "rb") as f:
        import_rootfs(store, f, "busybox")
    lowers = lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)
good = idmap.current()
# A range the user was not given: newuidmap refuses it.
bad = idmap.IdMap(good.uids[:1] + ((1, 5000, 10),), good.gids, good.newuidmap, good.newgidmap, good.user)
idmap.current.cache_clear()
idmap.current = lambda: bad
scratch = home / "root-bad" / "tmp"
try:
    run_step(lowers, scratch / "u", scratch / "w", ProcessSpec(argv=("/bin/true",)))
except LayerbuildError as exc:
    print(exc.render().replace("\n", " | "))
# The sandbox's own mapping, in nsinit: the start fails with newuidmap's message.
sandbox._place = lambda view, wanted, stubs, rootless: place_mounts(view, wanted, stubs)
res = run_step(lowers, scratch / "u", scratch / "w", ProcessSpec(argv=("/bin/true",)))
print(res.exit_code)
print(res.error)
"""


@pytest.mark.integration
def test_a_range_newuidmap_refuses_is_a_clear_error(
    subid_range: None, rootless_home: Path, busybox_rootfs_tar: bytes  # noqa: F811
) -> None:
    (rootless_home / "busybox.tar").write_bytes(busybox_rootfs_tar)
    (rootless_home / "bad.py").write_text(BAD_RANGE)
    python, env = python_for_user(rootless_home)
    proc = as_user([python, str(rootless_home / "bad.py"), str(rootless_home)], env)
    assert proc.returncode == 0, proc.stderr
    raised, code, error = proc.stdout.splitlines()
    assert raised.startswith("newuidmap failed:") and "not allowed" in raised and "/etc/subuid" in raised, raised
    assert code == "125"
    assert error.startswith("cannot map the subordinate ids:") and "not allowed" in error, error


CALLS = r"""
import io, json, os, sys
from layerbuild.errors import LayerbuildError
from layerbuild.store import idmap

where = sys.argv[1]
out = {}
for label, ids in (("subids", idmap.current()), ("single", idmap.single_map())):
    out[label] = {"uid": idmap.call_in_userns(os.getuid, ids=ids), "outside": os.getuid()}
    sink = io.BytesIO()
    out[label]["returned"] = idmap.call_in_userns(lambda f, n: f.write(b"x" * n) and n, 3 << 20, ids=ids, sink=sink)
    out[label]["streamed"] = len(sink.getvalue())
    def fail():
        raise LayerbuildError("no", hint="this way")
    try:
        idmap.call_in_userns(fail, ids=ids)
    except LayerbuildError as exc:
        out[label]["error"] = [exc.message, exc.hint]
# With subordinate ids, root of the namespace can make a file of uid 1000 and read it back.
path = os.path.join(where, "owned")
def make():
    with open(path, "w") as f:
        f.write("mine")
    os.chown(path, 1000, 1000)
    os.chmod(path, 0o600)
    return os.stat(path).st_uid
out["inside_uid"] = idmap.call_in_userns(make)
out["host_uid"] = os.stat(path).st_uid
out["read"] = idmap.call_in_userns(lambda: open(path).read())
try:
    open(path).read()
except PermissionError:
    out["outside_read"] = "denied"
print(json.dumps(out))
"""


@pytest.mark.integration
def test_call_in_userns_contract(subid_range: None, rootless_home: Path) -> None:  # noqa: F811
    user = ensure_user()
    (rootless_home / "calls.py").write_text(CALLS)
    work = rootless_home / "calls"
    work.mkdir(exist_ok=True)
    shutil.chown(work, user.pw_uid, user.pw_gid)
    python, env = python_for_user(rootless_home)
    proc = as_user([python, str(rootless_home / "calls.py"), str(work)], env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for label in ("subids", "single"):
        res = out[label]
        assert res["uid"] == 0 and res["outside"] == user.pw_uid
        assert res["returned"] == 3 << 20 and res["streamed"] == 3 << 20
        assert res["error"] == ["no", "this way"]
    first_subuid = idmap.read_ranges(idmap.SUBUID, USER, user.pw_uid)[0][0]
    assert out["inside_uid"] == 1000 and out["host_uid"] == first_subuid + 999
    assert out["read"] == "mine" and out["outside_read"] == "denied"
