"""A fully cached rebuild gives the same image id, whatever the Dockerfile's last steps are: config-only
steps take their history time from the layers around them, as BuildKit's exporter fills it in."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import layerbuild
from layerbuild.worker.build import history_times
from tests.build.kit import make_base

pytestmark = pytest.mark.integration


def test_config_only_steps_take_the_times_of_the_layers_around_them() -> None:
    # BuildKit: before the first new layer, that layer's time; after it, the time of the layer before.
    assert history_times([None, 10.0, None, 20.0, None], base_time=5.0, now=99.0) == [10.0, 10.0, 10.0, 20.0, 20.0]
    assert history_times([10.0, None, None], base_time=5.0, now=99.0) == [10.0, 10.0, 10.0]
    assert history_times([None, None], base_time=5.0, now=99.0) == [5.0, 5.0]  # the base's newest entry
    assert history_times([None], base_time=None, now=99.0) == [99.0]  # FROM scratch, no layer at all


@pytest.mark.parametrize("tail", ["LABEL a=b\nCMD [\"x\"]\n", "ENV A=1\n"])
def test_cached_rebuild_through_the_full_path_keeps_the_image_id(tmp_path: Path, tail: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text("f\n")
    (ctx / "Dockerfile").write_text("FROM base:1\nLABEL first=1\nCOPY f /f\nRUN echo hi > /x\n" + tail)
    first = layerbuild.build(ctx, root=root, tags=["sut:1"])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # the rebuilds run an hour later
    for n in range(2):  # a new mtime, same content: the full path, every step cached
        os.utime(ctx / "f", (1_700_000_000 + n, 1_700_000_000 + n))
        again = layerbuild.build(ctx, root=root, tags=["sut:1"])
        assert all(s.cached for s in again.steps)
        assert again.image.id == first.image.id


def test_config_only_build_on_a_base_keeps_the_image_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nLABEL only=config\n")
    first = layerbuild.build(ctx, root=root, tags=["sut:1"]).image.id
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    assert layerbuild.build(ctx, root=root, tags=["sut:1"], no_cache=True).image.id == first


def test_cached_rebuild_with_an_output_keeps_the_image_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    make_base(tmp_path / "base", root)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base:1\nRUN echo hi > /x\nLABEL last=1\n")
    first = layerbuild.build(ctx, root=root, tags=["sut:1"])
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    again = layerbuild.build(ctx, root=root, tags=["sut:1"], outputs=[("oci", str(tmp_path / "o.tar"))])
    assert again.image.id == first.image.id
