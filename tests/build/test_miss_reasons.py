"""A miss names the field of the op's cache definition that changed, old value → new value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build import kit
from tests.build.conftest import write

pytestmark = pytest.mark.integration


@pytest.fixture
def based(tmp_path: Path, root: Path) -> Path:
    kit.make_base(tmp_path / "base", root)
    return root


def reason_after(ctx: Path, root: Path, before: str, after: str, run: str, **kw: object) -> str:
    """Build `before`, then `after` (both Dockerfiles), and return the miss reason of the step `run`."""
    write(ctx, {"Dockerfile": before})
    first = kit.build(ctx, root)
    assert not kit.step(first, run).cached
    write(ctx, {"Dockerfile": after})
    step = kit.step(kit.build(ctx, root, **kw), run)  # type: ignore[arg-type]
    assert not step.cached and step.reason, f"{run!r} should miss with a reason, got {step}"
    return str(step.reason)


def test_user_change_is_named(ctx: Path, based: Path) -> None:
    reason = reason_after(ctx, based, "FROM base:1\nUSER 1000\nRUN id -u > /tmp/uid\n",
                          "FROM base:1\nUSER 2000\nRUN id -u > /tmp/uid\n", "RUN id -u")
    assert "USER 1000 → 2000" in reason


def test_workdir_change_is_named(ctx: Path, based: Path) -> None:
    reason = reason_after(ctx, based, "FROM base:1\nWORKDIR /w1\nRUN pwd > /out/pwd\n",
                          "FROM base:1\nWORKDIR /w2\nRUN pwd > /out/pwd\n", "RUN pwd")
    assert "WORKDIR /w1 → /w2" in reason


def test_shell_change_is_named(ctx: Path, based: Path) -> None:
    reason = reason_after(ctx, based, 'FROM base:1\nSHELL ["/bin/sh", "-c"]\nRUN echo "$-" > /out/flags\n',
                          'FROM base:1\nSHELL ["/bin/sh", "-ec"]\nRUN echo "$-" > /out/flags\n', "RUN echo")
    assert 'SHELL ["/bin/sh", "-c"] → ["/bin/sh", "-ec"]' in reason


def test_env_change_keeps_todays_wording(ctx: Path, based: Path) -> None:
    reason = reason_after(ctx, based, "FROM base:1\nENV MODE=a\nRUN env > /out/env\n",
                          "FROM base:1\nENV MODE=b\nRUN env > /out/env\n", "RUN env")
    assert "env MODE changed ('a' → 'b')" in reason


def test_network_change_is_named(ctx: Path, based: Path) -> None:
    dockerfile = "FROM base:1\nRUN cat /proc/net/dev > /out/dev\n"
    reason = reason_after(ctx, based, dockerfile, dockerfile, "RUN cat /proc/net/dev", network="none")
    assert "network default → none" in reason


def test_bind_mount_source_change_is_named(ctx: Path, based: Path) -> None:
    dockerfile = "FROM base:1\nRUN --mount=type=bind,source=m.txt,target=/m.txt cat /m.txt > /out/m\n"
    write(ctx, {"Dockerfile": dockerfile, "m.txt": "first\n"})
    assert not kit.step(kit.build(ctx, based), "RUN --mount").cached
    write(ctx, {"m.txt": "second\n"})
    step = kit.step(kit.build(ctx, based), "RUN --mount")
    assert not step.cached and step.reason is not None and "bind mount m.txt changed" in step.reason, step


def test_retagged_base_is_named(ctx: Path, based: Path, tmp_path: Path) -> None:
    write(ctx, {"Dockerfile": "FROM base:1\nRUN cat /etc/flavor > /out/flavor\nRUN echo second > /out/2\n"})
    kit.build(ctx, based)
    old = kit.make_base(tmp_path / "base", based, flavor="0")  # the same base again: nothing changes
    assert all(s.cached for s in kit.run_steps(old))
    new = kit.make_base(tmp_path / "base", based, flavor="1")  # base:1 now names another image
    assert new.image.id != old.image.id
    step = kit.step(kit.build(ctx, based), "RUN cat /etc/flavor")
    assert not step.cached and step.reason is not None and "base image base:1 now sha256:" in step.reason, step
    shown = re.search(r"now sha256:([0-9a-f]+)", step.reason)
    with Store.open(based) as store:
        now = resolve_image(store, "base:1")
    assert shown and len(shown[1]) >= 12, step.reason
    assert any(d.removeprefix("sha256:").startswith(shown[1]) for d in (now.id, now.manifest_digest)), (
        f"{step.reason!r} should name the image base:1 names now, {now.id}")
