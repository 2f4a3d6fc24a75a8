"""The cache behaviour users rely on, on real FROM-scratch builds with COPY and metadata."""

from __future__ import annotations

import os
import time
from pathlib import Path

import layerbuild
from layerbuild.solve import BuildResult
from layerbuild.store import Store
from tests.build.conftest import write

APP = """\
FROM scratch
ARG VERSION=1
WORKDIR /app
COPY deps.txt .
COPY src/ ./src/
LABEL version=$VERSION
COPY --chmod=0755 run.sh /usr/bin/run-$VERSION
ENV MODE=prod
CMD ["/usr/bin/run"]
"""


def setup_app(ctx: Path) -> None:
    write(ctx, {
        "Dockerfile": APP, "deps.txt": "requests\n", "src/app.py": "print('hi')\n",
        "src/lib/util.py": "X = 1\n", "run.sh": "#!/bin/sh\n", "notes.md": "not copied\n",
        "src/build/junk.o": "ignored\n", ".dockerignore": "src/build\n",
    })  # fmt: skip


def build(ctx: Path, root: Path, **kw: object) -> BuildResult:
    return layerbuild.build(ctx, root=root, tags=["app:dev"], **kw)  # type: ignore[arg-type]


def steps(result: BuildResult) -> dict[str, tuple[bool, str | None]]:
    return {s.instruction: (s.cached, s.reason) for s in result.steps if s.kind in ("copy", "exec") or
            s.instruction.startswith("WORKDIR")}


def test_first_build_then_noop_rebuild(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    first = build(ctx, root)
    assert all(not cached and reason == "no earlier build" for cached, reason in steps(first).values())
    assert first.summary.hit_rate == 0.0 and first.summary.executed == 3
    second = build(ctx, root)
    assert all(cached and reason is None for cached, reason in steps(second).values())
    assert second.summary.hit_rate == 1.0 and second.summary.executed == 0
    # A fully cached rebuild gives the very same image.
    assert second.image.id == first.image.id


def test_touch_keeps_everything_cached(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    build(ctx, root)
    later = time.time() + 100
    for path in ctx.rglob("*"):
        os.utime(path, (later, later))
    assert build(ctx, root).summary.hit_rate == 1.0


def test_edit_one_file_misses_that_copy_and_later_steps(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    build(ctx, root)
    (ctx / "src/lib/util.py").write_text("X = 2\n")
    result = steps(build(ctx, root))
    assert result["COPY deps.txt ."] == (True, None)
    assert result["COPY src/ ./src/"] == (False, "src/lib/util.py changed")
    cached, reason = result["COPY --chmod=0755 run.sh /usr/bin/run-$VERSION"]
    assert not cached and reason is not None and "upstream step changed its output: `COPY src/ ./src/`" in reason


def test_excluded_or_uncopied_files_do_not_matter(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    build(ctx, root)
    (ctx / "src/build/junk.o").write_text("changed\n")
    (ctx / "notes.md").write_text("changed\n")
    assert build(ctx, root).summary.hit_rate == 1.0


def test_build_arg_change_misses_from_first_use(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    build(ctx, root, build_args={"VERSION": "1"})
    result = steps(build(ctx, root, build_args={"VERSION": "2"}))
    assert result["COPY src/ ./src/"] == (True, None)
    assert result["COPY --chmod=0755 run.sh /usr/bin/run-$VERSION"] == (
        False, "build-arg VERSION changed ('1' → '2')")


def test_permission_bit_change_misses(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    build(ctx, root)
    os.chmod(ctx / "src/app.py", 0o600)
    cached, reason = steps(build(ctx, root))["COPY src/ ./src/"]
    assert not cached and reason == "src/app.py changed"


def test_no_cache_reason(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    build(ctx, root)
    result = build(ctx, root, no_cache=True)
    assert {r for _, r in steps(result).values()} == {"--no-cache"}


def test_failed_build_keeps_successful_steps_cached(ctx: Path, root: Path) -> None:
    setup_app(ctx)
    write(ctx, {"Dockerfile": APP.replace("COPY --chmod=0755 run.sh", "COPY --chmod=0755 missing.sh")})
    try:
        build(ctx, root)
    except layerbuild.BuildError:
        pass
    else:
        raise AssertionError("the build should fail on the missing source")
    write(ctx, {"Dockerfile": APP})
    result = steps(build(ctx, root))
    assert result["COPY src/ ./src/"][0] is True
    with Store.open(root) as store:
        assert store.fsck().ok
