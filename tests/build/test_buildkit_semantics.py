"""Pure-semantics cases of BuildKit's Dockerfile integration tests (frontend/dockerfile/dockerfile_test.go,
named where one exists) and of the Dockerfile reference, rebuilt here as real builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import layerbuild
from layerbuild.errors import LayerbuildError
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.build.kit import make_base, read

pytestmark = pytest.mark.integration


@pytest.fixture
def based(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    return root, ctx


def build(ctx: Path, root: Path, dockerfile: str, files: dict[str, str] | None = None, **kw: object) -> None:
    write(ctx, {"Dockerfile": dockerfile, **(files or {})})
    layerbuild.build(ctx, root=root, tags=["sut:1"], **kw)  # type: ignore[arg-type]


def config(root: Path) -> dict[str, Any]:
    with Store.open(root) as store:
        return json.loads(resolve_image(store, "sut:1").config.to_json())  # type: ignore[no-any-return]


def test_required_variable_message(based: tuple[Path, Path]) -> None:
    """The Dockerfile reference's `${FOO:?message}`: an unset variable stops the build with the message."""
    root, ctx = based
    with pytest.raises(LayerbuildError, match="FOO is not set, please set it"):
        build(ctx, root, "FROM base:1\nRUN echo ${FOO:?FOO is not set, please set it}\n")


def test_empty_arg_is_in_the_environment_and_a_bare_arg_is_not(based: tuple[Path, Path], tmp_path: Path) -> None:
    """testArgDefaultExpansion: `ARG BAR=` is set to "" for RUN, a bare `ARG FOO` is unset."""
    root, ctx = based
    build(ctx, root, "FROM base:1\nARG FOO\nARG BAR=\n"
                     "RUN (env | grep -q '^BAR=$' && echo bar-set) > /out/a; (env | grep -q '^FOO=' || echo foo-unset) >> /out/a\n")
    assert read(root, "sut:1", tmp_path / "x", "/out/a").split() == ["bar-set", "foo-unset"]


def test_meta_arg_trim_in_from_and_quoted_meta_args(based: tuple[Path, Path], tmp_path: Path) -> None:
    """testDefaultEnvWithArgs / testMultiArgs: `${a%%e*}` in FROM; quoted and several meta ARGs in one line."""
    root, ctx = based
    build(ctx, root, 'ARG img=base:1-extra ver="q u" other=2\nFROM ${img%%-*}\nARG ver\nARG other\n'
                     'RUN echo "$ver|$other" > /out/v\n')
    assert read(root, "sut:1", tmp_path / "x", "/out/v") == "q u|2\n"


def test_expose_expansion(tmp_path: Path) -> None:
    """testExposeExpansion: `EXPOSE $PORTS` splits into ports after expansion."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    root = tmp_path / "store"
    build(ctx, root, "FROM scratch\nARG PORTS='3000 4000/udp'\nEXPOSE $PORTS\nEXPOSE 5000\n")
    assert set(config(root)["config"]["ExposedPorts"]) == {"3000/tcp", "4000/udp", "5000/tcp"}  # type: ignore[index]


def test_shell_form_entrypoint_under_shell_clears_the_inherited_cmd(based: tuple[Path, Path]) -> None:
    """testCmdShell, and the reference's rule that ENTRYPOINT resets a CMD inherited from the base."""
    root, ctx = based
    build(ctx, root, 'FROM base:1 AS parent\nCMD ["inherited"]\nFROM parent\nSHELL ["/bin/sh", "-xc"]\n'
                     "ENTRYPOINT echo hello\n")
    run = config(root)["config"]
    assert run["Entrypoint"] == ["/bin/sh", "-xc", "echo hello"]  # type: ignore[index]
    assert "Cmd" not in run or run["Cmd"] is None  # type: ignore[operator, index]


def test_workdir_creates_its_directory_and_relative_copy_uses_it(based: tuple[Path, Path], tmp_path: Path) -> None:
    """testWorkdirCreatesDir / testRelativeWorkDir / testCopyRelative: WORKDIR makes the directory,
    a relative WORKDIR and a relative COPY destination resolve against it."""
    root, ctx = based
    build(ctx, root, "FROM base:1\nWORKDIR /wd\nWORKDIR sub\nCOPY f.txt rel/\nCOPY f.txt ./dot.txt\n"
                     "RUN pwd > /out/pwd && ls /wd/sub/rel > /out/ls\n", {"f.txt": "f\n"})
    assert read(root, "sut:1", tmp_path / "x", "/out/pwd") == "/wd/sub\n"
    assert read(root, "sut:1", tmp_path / "x", "/out/ls") == "f.txt\n"
    assert read(root, "sut:1", tmp_path / "x", "/wd/sub/dot.txt") == "f\n"


def test_overriding_files_and_a_trailing_slash(based: tuple[Path, Path], tmp_path: Path) -> None:
    """testCopyOverrideFiles: a later COPY replaces a file; and the reference's rule that `dest/` makes
    a directory while `dest` without the slash names the file."""
    root, ctx = based
    build(ctx, root, "FROM base:1\nCOPY a.txt /over\nCOPY b.txt /over\nCOPY a.txt /dir/\nCOPY a.txt /file\n",
          {"a.txt": "a\n", "b.txt": "b\n"})
    out = tmp_path / "x"
    assert read(root, "sut:1", out, "/over") == "b\n"
    assert (out / "dir").is_dir() and (out / "dir" / "a.txt").read_text() == "a\n"
    assert (out / "file").is_file()


def test_stage_names_are_case_insensitive(based: tuple[Path, Path], tmp_path: Path) -> None:
    """The reference: stage names are case-insensitive, so `AS Build` is found as `build` in FROM and COPY --from."""
    root, ctx = based
    build(ctx, root, "FROM base:1 AS Build\nRUN echo made > /made\nFROM BUILD AS Next\n"
                     "FROM scratch\nCOPY --from=next /made /made\n")
    assert read(root, "sut:1", tmp_path / "x", "/made") == "made\n"


def test_scratch_image_config_and_empty_layer_history(tmp_path: Path) -> None:
    """A scratch image with config steps only has no layers, and every history entry is marked
    empty_layer, as BuildKit's image exporter writes it."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    root = tmp_path / "store"
    build(ctx, root, "FROM scratch\nENV A=1\nLABEL l=v\nCMD [\"x\"]\n")
    cfg = config(root)
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": []}
    assert cfg["history"] and all(h.get("empty_layer") for h in cfg["history"])  # type: ignore[union-attr]
    assert cfg["config"]["Env"][0].startswith("PATH=")  # type: ignore[index]


def test_onbuild_is_cleared_in_the_child(based: tuple[Path, Path], tmp_path: Path) -> None:
    """The reference's ONBUILD: a child image runs its parent's triggers and does not keep them."""
    root, ctx = based
    make_base(tmp_path / "trig", root, tag="trig:1", trigger="fired")
    build(ctx, root, "FROM trig:1\nRUN cat /out/onbuild > /out/seen\n")
    assert read(root, "sut:1", tmp_path / "x", "/out/seen") == "fired\n"
    assert not config(root)["config"].get("OnBuild")  # type: ignore[union-attr]


def test_copy_through_a_symlinked_destination(based: tuple[Path, Path], tmp_path: Path) -> None:
    """testSymlinkDestination: a destination directory that is a symlink in the image is followed inside it."""
    root, ctx = based
    build(ctx, root, "FROM base:1\nRUN mkdir /real && ln -s /real /link\nCOPY f.txt /link/\n"
                     "RUN ls /real > /out/ls\n", {"f.txt": "f\n"})
    assert read(root, "sut:1", tmp_path / "x", "/out/ls") == "f.txt\n"
