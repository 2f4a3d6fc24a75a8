"""The touch fast path is never a wrong answer: over random trees and random touches, edits, renames,
mode changes and copies, whenever the last build's record answers a build, the full path (the solver
with its cache, no record) gives the same image and the same steps."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import layerbuild
from layerbuild.store import Store
from layerbuild.worker import fastpath
from layerbuild.worker.build import Build
from layerbuild.worker.request import BuildRequest

pytestmark = pytest.mark.integration

DOCKERFILE = "FROM scratch\nCOPY . /ctx/\nCOPY d1/ /d1/\n"
CONTENTS = ("", "a", "b", "ab", "ba", "abc", "xyz" * 40)
MUTATIONS = ("touch", "touch_same", "rewrite_same", "edit_same_size", "append", "rename", "chmod",
             "chmod_same", "copy_over", "swap", "add", "remove", "symlink", "mkdir", "ignore")


def full_path(ctx: Path, root: Path) -> dict[str, Any]:
    """The build as the solver answers it, the record neither read nor written."""

    class NoRecord(Build):
        def _fast(self, started: float) -> tuple[None, None]:
            return None, None

    with Store.open(root) as store:
        result = NoRecord(BuildRequest(context=ctx, tags=("fp:1",)), store).run()
    return result.to_json()


def essence(report: dict[str, Any]) -> tuple[object, ...]:
    return (report["image"]["id"],
            tuple((s["instruction"], s["cached"], s.get("layer")) for s in report["steps"]))


def files_of(ctx: Path) -> list[Path]:
    return sorted(p for p in ctx.rglob("*") if (p.is_file() or p.is_symlink()) and p.name != "Dockerfile")


def mutate(ctx: Path, kind: str, n: int, serial: int) -> str:
    files = [p for p in files_of(ctx) if not p.is_symlink()]
    victim = files[n % len(files)] if files else None
    other = files[(n // 7) % len(files)] if files else None
    if kind == "add" or victim is None or other is None:
        path = ctx / ("d1" if n % 2 else "") / f"new{serial}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(CONTENTS[n % len(CONTENTS)])
        return f"add {path.relative_to(ctx)}"
    rel = str(victim.relative_to(ctx))
    if kind == "touch":
        st = victim.stat()
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + (n + 1) * 1_000_000_000))
    elif kind == "touch_same":
        st = victim.stat()
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime moves
    elif kind == "rewrite_same":
        victim.write_bytes(victim.read_bytes())
    elif kind == "edit_same_size":
        data = victim.read_bytes()
        victim.write_bytes(bytes(reversed(data)) if data != bytes(reversed(data)) else data.replace(b"a", b"q")
                           if b"a" in data else b"z" * len(data) if data and data != b"z" * len(data) else b"y")
    elif kind == "append":
        with open(victim, "ab") as f:
            f.write(b"+")
    elif kind == "rename":
        victim.rename(victim.with_name(victim.name + "r"))
    elif kind == "chmod":
        victim.chmod(victim.stat().st_mode ^ 0o111)
    elif kind == "chmod_same":
        victim.chmod(victim.stat().st_mode & 0o7777)
    elif kind == "copy_over":
        tmp = victim.with_name(f".tmp{serial}")
        tmp.write_bytes(victim.read_bytes())
        os.chmod(tmp, victim.stat().st_mode & 0o7777)
        tmp.replace(victim)  # a new inode, the same content and mode
    elif kind == "swap":
        a, b = victim.read_bytes(), other.read_bytes()
        victim.write_bytes(b)
        other.write_bytes(a)
        return f"swap {rel} {other.relative_to(ctx)}"
    elif kind == "remove":
        victim.unlink()
    elif kind == "symlink":
        link = ctx / f"link{n % 2}"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(rel)
    elif kind == "mkdir":
        (ctx / f"empty{n % 3}").mkdir(exist_ok=True)
    elif kind == "ignore":
        (ctx / ".dockerignore").write_text(f"{rel}\n" if n % 2 else "")
    return f"{kind} {rel}"


@st.composite
def trees(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d1/e", "d1/f", "d1/d2/g", "d3/h"]), min_size=1,
                          max_size=7, unique=True))
    return {name: draw(st.sampled_from(CONTENTS)) for name in names}


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("LAYERBUILD_FASTPATH_EXAMPLES", "20")), deadline=None, database=None,
          derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tree=trees(), steps=st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 999)), min_size=1,
                                    max_size=5), settle=st.booleans())
def test_an_answer_from_the_record_equals_the_full_path(
        tree: dict[str, str], steps: list[tuple[str, int]], settle: bool,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    top = tmp_path_factory.mktemp("fastpath")
    ctx, root = top / "ctx", top / "store"
    (ctx / "d1").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    for name, text in tree.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    if settle:
        time.sleep(fastpath.RACY_MARGIN_NS / 1e9 + 0.01)  # the files' stats vouch for them from the start
    layerbuild.build(ctx, root=root, tags=["fp:1"])
    history = []
    for serial, (kind, n) in enumerate(steps):
        history.append(mutate(ctx, kind, n, serial))
        request = BuildRequest(context=ctx, tags=("fp:1",))
        answered, _ = fastpath.check(request, root, time.monotonic())
        full = full_path(ctx, root)
        if answered is not None:
            assert essence(answered) == essence(full), f"a wrong answer from the record after {history}"
        layerbuild.build(ctx, root=root, tags=["fp:1"])  # records this state for the next step


def test_a_touched_or_copied_file_is_answered_and_an_edit_is_not(ctx: Path, root: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "d1").mkdir()
    for name in ("a", "b", "d1/c"):
        (ctx / name).write_text(name * 100)
    time.sleep(fastpath.RACY_MARGIN_NS / 1e9 + 0.01)
    first = layerbuild.build(ctx, root=root, tags=["fp:1"])
    read: list[str] = []
    real = fastpath.file_key
    monkeypatch.setattr(fastpath, "file_key", lambda rel, *a: read.append(rel) or real(rel, *a))
    request = BuildRequest(context=ctx, tags=("fp:1",))

    (side,) = (root / "fastpath").glob("*.stats.json")
    written = side.stat().st_mtime_ns
    st = (ctx / "a").stat()
    os.utime(ctx / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    answered, _ = fastpath.check(request, root, time.monotonic())
    assert answered is not None and answered["image"]["id"] == first.image.id
    assert read == ["a"]  # only the file whose stat moved is read again
    assert side.stat().st_mtime_ns == written  # touched just now: its stat vouches for nothing yet
    time.sleep(fastpath.RACY_MARGIN_NS / 1e9 + 0.01)
    read.clear()
    assert fastpath.check(request, root, time.monotonic())[0] is not None
    assert read == ["a"]  # its ctime was too recent to vouch for it then: read once more, now trusted
    import json

    (record,) = (p for p in (root / "fastpath").iterdir() if not p.name.endswith(".stats.json"))
    taken = fastpath.check(request, root, time.monotonic())[1]
    assert taken is not None and json.loads(record.read_text())["fingerprint"] == taken.fingerprint  # recorded
    assert side.stat().st_mtime_ns == written  # one small file to read again: the side file's rows stay
    read.clear()
    assert fastpath.check(request, root, time.monotonic())[0] is not None
    assert read == []  # the record was brought up to date: a no-op again, by stats alone

    (ctx / "d1" / "c").write_bytes((ctx / "d1" / "c").read_bytes())  # same content, new times
    assert fastpath.check(request, root, time.monotonic())[0] is not None
    (ctx / "b").write_text("B" * 100)  # same size, other content
    assert fastpath.check(request, root, time.monotonic())[0] is None
    (ctx / "b").write_text("b" * 100)
    (ctx / "a").chmod(0o755)
    assert fastpath.check(request, root, time.monotonic())[0] is None


def test_files_written_just_before_a_build_are_read_again_by_the_next(ctx: Path, root: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Within RACY_MARGIN_NS of a write, a second same-size write may leave the stat as it was: such a
    build records no stat fingerprint, and the next build reads those files before it answers."""
    import json

    monkeypatch.setattr(fastpath, "RACY_MARGIN_NS", 3600 * 10**9)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("one")
    layerbuild.build(ctx, root=root, tags=["fp:1"])
    (record,) = (p for p in (root / "fastpath").iterdir() if not p.name.endswith(".stats.json"))
    assert json.loads(record.read_text())["fingerprint"] is None
    read: list[str] = []
    real = fastpath.file_key
    monkeypatch.setattr(fastpath, "file_key", lambda rel, *a: read.append(rel) or real(rel, *a))
    request = BuildRequest(context=ctx, tags=("fp:1",))
    assert fastpath.check(request, root, time.monotonic())[0] is not None  # nothing changed: answered,
    assert sorted(read) == ["Dockerfile", "a"]  # but only once the files were read again


def test_the_touch_path_leaves_a_big_read_to_the_full_path(ctx: Path, root: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the side file cannot vouch for are read again only up to a budget: past it the full
    path (whose stat cache knows them) decides, and records them for the next build."""
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /x/\n")
    for name in ("a", "b"):
        (ctx / name).write_bytes(b"x" * 1000)
    layerbuild.build(ctx, root=root, tags=["fp:1"])  # just written: nothing vouched for by its stat
    request = BuildRequest(context=ctx, tags=("fp:1",))
    monkeypatch.setattr(fastpath, "_READ_LIMIT", 1500)
    assert fastpath.check(request, root, time.monotonic())[0] is None
    monkeypatch.setattr(fastpath, "_READ_LIMIT", 1 << 20)
    assert fastpath.check(request, root, time.monotonic())[0] is not None


def test_another_dockerfile_or_option_reads_no_file(ctx: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's content fingerprint covers the Dockerfile, ignore file, options and version: when
    one of those differs no file can make it match, so the touch path reads none."""
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("a" * 100)
    time.sleep(fastpath.RACY_MARGIN_NS / 1e9 + 0.01)
    layerbuild.build(ctx, root=root, tags=["fp:1"])
    read: list[str] = []
    monkeypatch.setattr(fastpath, "file_key", lambda rel, *a: read.append(rel) or "")
    st = (ctx / "a").stat()
    os.utime(ctx / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fastpath.check(BuildRequest(context=ctx, tags=("fp:1",), build_args={"X": "1"}), root, 0.0)[0] is None
    assert read == []
    assert fastpath.check(BuildRequest(context=ctx, tags=("fp:1",)), root, 0.0)[0] is None  # read: ""≠key
    assert read == ["a"]
