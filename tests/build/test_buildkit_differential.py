"""layerbuild against what a real BuildKit made of the same Dockerfiles (tests/build/differential.py):
each case is built here on the same busybox rootfs and its summary (files against the base, runtime
config, history) must equal the one recorded from Docker's BuildKit, or current BuildKit's where the two
differ (`Case.current`, with the source that says so)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.errors import LayerbuildError
from layerbuild.image import import_rootfs
from layerbuild.store import Store
from tests.build.differential import (
    CASES,
    RECORDED,
    Case,
    expected,
    flatten,
    read_docker_archive,
    summarize,
    write_context,
)
from tests.runtime.conftest import busybox_tar

pytestmark = pytest.mark.integration

RECORD = json.loads(RECORDED.read_text())


@pytest.fixture(scope="module")
def based(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A store with the busybox rootfs imported as `base` (and `base-extra`), and that base's files."""
    tmp = tmp_path_factory.mktemp("differential")
    root = tmp / "store"
    with Store.open(root) as store:
        import_rootfs(store, io.BytesIO(busybox_tar()), "base")
    assert main(["--root", str(root), "tag", "base", "base-extra"]) == 0
    assert main(["--root", str(root), "save", "-o", str(tmp / "base.tar"), "base"]) == 0
    return root, flatten(read_docker_archive(tmp / "base.tar")[1])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_image_as_buildkit(case: Case, based: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, base = based
    ctx = tmp_path / "ctx"
    write_context(case, ctx)
    for tag in case.parents:
        layerbuild.build(ctx, dockerfile=ctx / f"{tag}.Dockerfile", root=root, tags=[tag])
    want = expected(case, RECORD["cases"])
    archive = tmp_path / "image.tar"
    build = lambda: layerbuild.build(ctx, root=root, tags=[f"case-{case.name}"],  # noqa: E731
                                     build_args=dict(case.build_args), target=case.target,
                                     outputs=[("docker", str(archive))])
    if want.get("error"):
        with pytest.raises(LayerbuildError):
            build()
        return
    build()
    got = summarize(archive, base)
    assert got["files"] == want["files"]
    assert got["config"] == want["config"]
    assert got["platform"] == want["platform"]
    # The base's own history (its import, by each engine) comes first; the build's steps follow.
    assert [h["empty_layer"] for h in got["history"][1:]] == [h["empty_layer"] for h in want["history"][1:]]
    assert [h["created_by"] for h in got["history"][1:]] == [h["created_by"] for h in want["history"][1:]]
    assert got["layers"] == want["layers"]


def test_the_record_covers_every_case() -> None:
    assert sorted(RECORD["cases"]) == sorted(c.name for c in CASES)
    assert RECORD["engine"].startswith("Docker ")
