"""No needless misses: a change that nothing a step sees re-runs no step, and `COPY --from` re-runs
only when the paths it copies changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.build import kit
from tests.build.conftest import write

pytestmark = pytest.mark.integration

APP = """\
FROM base:1
ARG USED=1
COPY app.txt /app/
COPY sub/ /sub/
RUN cat /app/app.txt /sub/s.txt > /out/seen && echo used-$USED >> /out/seen
# a comment between the steps
RUN ls /sub > /out/listing
"""


@pytest.fixture
def app(ctx: Path, root: Path, tmp_path: Path) -> Path:
    """The app context, built once into `root` (every RUN/COPY step executed)."""
    kit.make_base(tmp_path / "base", root)
    write(ctx, {"Dockerfile": APP, "app.txt": "app\n", "sub/s.txt": "s\n", "sub/junk.log": "junk\n",
                ".dockerignore": "sub/*.log\n"})
    first = kit.build(ctx, root)
    assert first.summary.executed == 4 and all(not s.cached for s in kit.run_steps(first))
    return ctx


def assert_all_cached(ctx: Path, root: Path, **kw: object) -> None:
    result = kit.build(ctx, root, **kw)  # type: ignore[arg-type]
    missed = [(s.instruction, s.reason) for s in kit.run_steps(result) if not s.cached]
    assert result.summary.executed == 0 and not missed, f"needless misses: {missed}"
    assert len(kit.run_steps(result)) == 4


def test_touch_reruns_nothing(app: Path, root: Path) -> None:
    later = time.time() + 1000
    for path in (app / "app.txt", app / "sub" / "s.txt", app / "sub"):
        os.utime(path, (later, later))
    assert_all_cached(app, root)


def test_chown_reruns_nothing(app: Path, root: Path) -> None:
    for path in (app / "app.txt", app / "sub" / "s.txt"):
        os.chown(path, 1234, 5678)
    assert_all_cached(app, root)


def test_ignored_file_change_reruns_nothing(app: Path, root: Path) -> None:
    write(app, {"sub/junk.log": "changed junk, longer than before\n", "sub/more.log": "new\n"})
    assert_all_cached(app, root)


def test_unused_build_arg_reruns_nothing(app: Path, root: Path) -> None:
    assert_all_cached(app, root, build_args={"NOBODY_USES_THIS": "x"})


def test_dockerfile_comment_reruns_nothing(app: Path, root: Path) -> None:
    write(app, {"Dockerfile": "# syntax? no, just a comment\n" + APP.replace(
        "# a comment between the steps", "# another comment\n# and one more")})
    assert_all_cached(app, root)


def test_used_build_arg_does_rerun(app: Path, root: Path, tmp_path: Path) -> None:
    """The control for the cases above: a change the RUN sees does re-run it."""
    result = kit.build(app, root, build_args={"USED": "2"})
    assert not kit.step(result, "RUN cat").cached
    assert kit.read(root, "sut:latest", tmp_path / "fs", "/out/seen") == "app\ns\nused-2\n"


STAGES = """\
FROM base:1 AS gen
COPY x.txt y.txt /src/
RUN cp /src/x.txt /x && cp /src/y.txt /y
FROM base:1
COPY --from=gen /x /x
RUN cat /x > /out/seen
RUN echo after > /out/after
"""


def test_copy_from_reruns_only_when_copied_paths_change(ctx: Path, root: Path, tmp_path: Path) -> None:
    kit.make_base(tmp_path / "base", root)
    write(ctx, {"Dockerfile": STAGES, "x.txt": "x1\n", "y.txt": "y1\n"})
    assert kit.build(ctx, root).summary.executed == 5

    write(ctx, {"y.txt": "y2, which /x does not see\n"})
    result = kit.build(ctx, root)
    assert not kit.step(result, "RUN cp").cached  # the stage itself re-ran ...
    after = [s for s in kit.run_steps(result) if s.stage != "gen" and s.instruction != "COPY x.txt y.txt /src/"]
    assert [s.instruction for s in after] == ["COPY --from=gen /x /x", "RUN cat /x > /out/seen",
                                              "RUN echo after > /out/after"]
    assert all(s.cached for s in after), [(s.instruction, s.reason) for s in after]  # ... and made the same /x

    write(ctx, {"x.txt": "x2\n"})
    result = kit.build(ctx, root)
    assert not kit.step(result, "COPY --from=gen /x").cached
    assert not kit.step(result, "RUN cat /x").cached
    assert kit.read(root, "sut:latest", tmp_path / "fs", "/out/seen") == "x2\n"
