"""`--build-context NAME=VALUE` in real builds: a directory read as a second build context (its own
.dockerignore, its content in the keys), an image of the store standing for a name, a stage replaced
by the context of its name, and bad values refused before anything is built."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.build.kit import export, make_base
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration


def step(result: layerbuild.BuildResult, text: str) -> tuple[bool, str | None]:
    found = [s for s in result.steps if s.instruction == text]
    assert len(found) == 1, [s.instruction for s in result.steps]
    return found[0].cached, found[0].reason


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    path = tmp_path / "lib"
    write(path, {"a.txt": "a1\n", "c.txt": "c1\n", "skip.log": "ignored\n", ".dockerignore": "*.log\n"})
    return path


DOCKERFILE = BUSYBOX_BASE + """\
FROM base
COPY main.txt /main.txt
COPY --from=lib c.txt /c.txt
RUN --mount=from=lib,target=/lib ls -a /lib > /listing && cat /lib/a.txt > /seen
COPY --from=lib a.txt /a.txt
"""


def test_copy_from_and_bind_mounts_read_the_directory_with_its_own_dockerignore(
        bb_ctx: Path, root: Path, lib: Path, tmp_path: Path) -> None:
    # The main context's ignore file leaves out its own a.txt only: the named context has its own.
    write(bb_ctx, {"Dockerfile": DOCKERFILE, "main.txt": "m\n", ".dockerignore": "a.txt\n", "a.txt": "main's\n"})
    layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    fs = export(root, "nc:1", tmp_path / "fs")
    assert (fs / "a.txt").read_text() == "a1\n" and (fs / "c.txt").read_text() == "c1\n"
    assert (fs / "seen").read_text() == "a1\n"
    listing = (fs / "listing").read_text().split()
    assert "c.txt" in listing and "skip.log" not in listing and ".dockerignore" in listing
    assert (fs / "a.txt").stat().st_uid == 0  # owners as the main context's: 0:0, as BuildKit's transfer


def test_editing_a_file_of_a_named_context_reruns_only_the_steps_that_read_it(
        bb_ctx: Path, root: Path, lib: Path, tmp_path: Path) -> None:
    write(bb_ctx, {"Dockerfile": DOCKERFILE, "main.txt": "m\n"})
    layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    (lib / "skip.log").write_text("ignored, edited\n")
    again = layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    assert again.summary.executed == 0, [(s.instruction, s.reason) for s in again.steps if not s.cached]

    (lib / "a.txt").write_text("a2\n")
    report = tmp_path / "report.json"
    code = main(["--root", str(root), "build", "--progress", "quiet", "-t", "nc:1", "--build-context",
                 f"lib={lib}", "--report", str(report), str(bb_ctx)])
    assert code == 0
    steps = {s["instruction"]: (s["cached"], s["reason"]) for s in json.loads(report.read_text())["steps"]}
    assert steps["COPY main.txt /main.txt"] == (True, None)
    assert steps["COPY --from=lib c.txt /c.txt"] == (True, None)
    assert steps["COPY --from=lib a.txt /a.txt"] == (False, "context lib: a.txt changed")
    run = "RUN --mount=from=lib,target=/lib ls -a /lib > /listing && cat /lib/a.txt > /seen"
    assert steps[run] == (False, "bind mount context lib: a.txt changed")
    executed = [name for name, (cached, _) in steps.items() if not cached and not name.startswith("FROM")]
    assert sorted(executed) == sorted(["COPY --from=lib a.txt /a.txt", run])
    assert (export(root, "nc:1", tmp_path / "fs") / "a.txt").read_text() == "a2\n"


def test_the_same_name_from_another_directory_is_another_input(
        bb_ctx: Path, root: Path, lib: Path, tmp_path: Path) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "FROM base\nCOPY --from=lib a.txt /a.txt\n"})
    layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    other = tmp_path / "other"
    write(other, {"a.txt": "other\n"})
    result = layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": other})
    assert step(result, "COPY --from=lib a.txt /a.txt") == (False, "context lib: a.txt changed")
    assert (export(root, "nc:1", tmp_path / "fs") / "a.txt").read_text() == "other\n"


def test_from_a_directory_starts_a_stage_with_its_files(bb_ctx: Path, root: Path, lib: Path, tmp_path: Path) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "FROM lib AS files\n"
                                                "FROM base\nCOPY --from=files / /files/\n"})
    result = layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    fs = export(root, "nc:1", tmp_path / "fs")
    assert sorted(p.name for p in (fs / "files").iterdir()) == [".dockerignore", "a.txt", "c.txt"]
    (lib / "c.txt").write_text("c2\n")
    again = layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    assert step(again, "[context lib] load") == (False, "context lib: c.txt changed")
    assert (export(root, "nc:1", tmp_path / "fs") / "files" / "c.txt").read_text() == "c2\n"
    assert result.image.id != again.image.id


def test_a_named_context_replaces_the_stage_of_its_name(bb_ctx: Path, root: Path, lib: Path, tmp_path: Path) -> None:
    # BuildKit's dockerfile2llb looks a stage's name up among the named contexts first: the stage's
    # own instructions are not read at all (its RUN would fail).
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "FROM base AS lib\nRUN exit 3\n"
                                                "FROM base\nCOPY --from=lib a.txt /a.txt\n"})
    result = layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    assert (export(root, "nc:1", tmp_path / "fs") / "a.txt").read_text() == "a1\n"
    assert not any("exit 3" in s.instruction for s in result.steps)
    with pytest.raises(layerbuild.BuildError):  # and without it, the stage is the stage
        layerbuild.build(bb_ctx, root=root, tags=["nc:1"])


def test_docker_image_stands_for_a_base_and_a_copy_source_of_that_name(
        tmp_path: Path, root: Path, ctx: Path) -> None:
    make_base(tmp_path / "b1", root, "mybase:1", flavor="one")
    make_base(tmp_path / "b2", root, "alpine", flavor="hub")  # an image that `FROM alpine` would take
    write(ctx, {"Dockerfile": "FROM alpine\nCOPY --from=alpine /etc/flavor /copied\nRUN cat /etc/flavor > /seen\n"})
    plain = layerbuild.build(ctx, root=root, tags=["o:1"])
    assert (export(root, "o:1", tmp_path / "fs") / "seen").read_text() == "hub\n"
    result = layerbuild.build(ctx, root=root, tags=["o:1"], build_contexts={"alpine": "docker-image://mybase:1"})
    fs = export(root, "o:1", tmp_path / "fs")
    assert (fs / "seen").read_text() == "one\n" and (fs / "copied").read_text() == "one\n"
    assert result.image.id != plain.image.id
    with Store.open(root) as store:
        manifest = resolve_image(store, "mybase:1").manifest_digest
    # Pinned by digest, and under the name as Docker Hub spells it: the same image.
    pinned = layerbuild.build(ctx, root=root, tags=["o:1"],
                              build_contexts={"docker.io/library/alpine": f"docker-image://mybase:1@{manifest}"})
    assert pinned.image.id == result.image.id and pinned.summary.executed == 0


def test_a_missing_image_is_a_located_error(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "FROM base\nCOPY --from=tools /x /x\n"})
    with pytest.raises(layerbuild.DockerfileError) as info:
        layerbuild.build(bb_ctx, root=root, build_contexts={"tools": "docker-image://nothere:1"})
    text = info.value.render()
    assert "Dockerfile:5" in text and "named context tools" in text and "nothere:1" in text
    # Looked for in the store, then pulled (from Docker Hub, which the tests' proxy refuses): both said.
    assert "not in the store, and the pull failed" in text and "registry-1.docker.io" in text


@pytest.mark.parametrize(("value", "words"), [
    ("{missing}", "no such directory"),
    ("{file}", "is not a directory"),
    ("https://example.com/src.tar.gz", "remote contexts"),
    ("git@github.com:moby/buildkit.git", "remote contexts"),
    ("oci-layout://{lib}", "OCI layout directories are not supported"),
    ("docker-image://Bad:1", "repository name must be lowercase"),
])
def test_bad_values_are_refused_before_anything_is_built(
        bb_ctx: Path, root: Path, lib: Path, tmp_path: Path, value: str, words: str,
        capfd: pytest.CaptureFixture[str]) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE})
    value = value.format(missing=tmp_path / "nope", file=lib / "a.txt", lib=lib)
    code = main(["--root", str(root), "build", "--build-context", f"lib={value}", str(bb_ctx)])
    err = capfd.readouterr().err
    assert code == 2 and words in err and "--build-context lib=" in err and "Traceback" not in err, err
    assert not (root / "blobs").exists() or not any((root / "blobs").rglob("*")), "nothing built"


@pytest.mark.parametrize(("item", "words"), [
    ("foo", "invalid --build-context 'foo', expected NAME=VALUE"),
    ("=dir", "expected NAME=VALUE"),
    ("Lib=.", "invalid context name 'Lib'"),
])
def test_bad_syntax_is_a_usage_error(ctx: Path, root: Path, item: str, words: str,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    write(ctx, {"Dockerfile": "FROM scratch\n"})
    code = main(["--root", str(root), "build", "--build-context", item, str(ctx)])
    err = capfd.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err


def test_a_no_op_rebuild_takes_the_fast_path_until_the_named_context_changes(
        bb_ctx: Path, root: Path, lib: Path) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + "FROM base\nCOPY --from=lib a.txt /a.txt\n"})
    layerbuild.build(bb_ctx, root=root, tags=["nc:1"], build_contexts={"lib": lib})
    from layerbuild.worker import fastpath
    from layerbuild.worker.request import BuildRequest, NamedContext

    request = BuildRequest(context=bb_ctx, tags=("nc:1",), contexts={"lib": NamedContext("local", str(lib))})
    assert fastpath.check(request, root, 0.0)[0] is not None
    (lib / "a.txt").write_text("a2\n")
    assert fastpath.check(request, root, 0.0)[0] is None
    shutil.rmtree(lib)
    assert fastpath.check(request, root, 0.0) == (None, None)
