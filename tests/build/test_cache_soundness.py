"""The cache's first promise, never a wrong hit: regression tests for known false hits, and a property
test comparing builds with the cache against no-cache builds of the same inputs in a fresh store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.build import kit
from tests.build.conftest import write

pytestmark = pytest.mark.integration


@pytest.fixture
def based(tmp_path: Path, root: Path) -> Path:
    """The store at `root` with the busybox base tagged base:1."""
    kit.make_base(tmp_path / "base", root)
    return root


def rebuilt_run(ctx: Path, root: Path, **kw: object) -> kit.BuildResult:
    """Build again with the cache and insist the last RUN re-ran."""
    result = kit.build(ctx, root, **kw)  # type: ignore[arg-type]
    last = [s for s in result.steps if s.kind == "exec"][-1]
    assert not last.cached, f"false hit: {last.instruction!r} stayed cached after its input changed"
    return result


def test_user_change_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nUSER 1000\nRUN id -u > /tmp/uid\n"})
    kit.build(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/tmp/uid") == "1000\n"
    write(ctx, {"Dockerfile": "FROM base:1\nUSER 2000\nRUN id -u > /tmp/uid\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/tmp/uid") == "2000\n"


def test_workdir_change_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nWORKDIR /w1\nRUN pwd > /out/pwd\n"})
    kit.build(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/pwd") == "/w1\n"
    write(ctx, {"Dockerfile": "FROM base:1\nWORKDIR /w2\nRUN pwd > /out/pwd\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/pwd") == "/w2\n"


def test_shell_change_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": 'FROM base:1\nSHELL ["/bin/sh", "-c"]\nRUN echo "$-" > /out/flags\n'})
    kit.build(ctx, based)
    assert "e" not in kit.read(based, "sut:latest", tmp_path / "fs", "/out/flags")
    write(ctx, {"Dockerfile": 'FROM base:1\nSHELL ["/bin/sh", "-ec"]\nRUN echo "$-" > /out/flags\n'})
    rebuilt_run(ctx, based)
    assert "e" in kit.read(based, "sut:latest", tmp_path / "fs", "/out/flags")


def test_bind_mount_source_edit_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nRUN --mount=type=bind,source=m.txt,target=/m.txt cat /m.txt > /out/m\n",
                "m.txt": "first\n"})
    kit.build(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/m") == "first\n"
    write(ctx, {"m.txt": "second\n"})
    rebuilt_run(ctx, based)
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/m") == "second\n"


NETS = "RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort > /out/nets\n"


def test_network_none_reruns_run(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\n" + NETS})
    kit.build(ctx, based)
    kit.read(based, "sut:latest", tmp_path / "fs", "/out/nets")
    rebuilt_run(ctx, based, network="none")
    assert kit.read(based, "sut:latest", tmp_path / "fs", "/out/nets").split() == ["lo"]
