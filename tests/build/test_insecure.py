"""`RUN --security=insecure`: refused without the `security.insecure` entitlement, privileged with it."""

from __future__ import annotations

from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.image.export import export_local
from layerbuild.image.store_io import resolve_image
from layerbuild.store import Store
from tests.build.conftest import write
from tests.conftest import BUSYBOX_BASE

pytestmark = pytest.mark.integration

STATUS = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status"
INSECURE = BUSYBOX_BASE + f"RUN --security=insecure {STATUS} > /status && unshare -U -r true && echo ns > /ns\n"


def status_of(root: Path, ref: str, dest: Path) -> dict[str, str]:
    with Store.open(root) as store:
        export_local(store, resolve_image(store, ref), dest)
    return dict(line.split(":\t") for line in (dest / "status").read_text().splitlines())


def test_refused_without_the_entitlement(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": INSECURE})
    with pytest.raises(layerbuild.LayerbuildError) as info:
        layerbuild.build(bb_ctx, root=root)
    assert "security.insecure" in info.value.render() and "--allow security.insecure" in info.value.render()


def test_cli_names_the_flag(bb_ctx: Path, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(bb_ctx, {"Dockerfile": INSECURE})
    assert main(["--root", str(root), "build", "--progress", "quiet", str(bb_ctx)]) != 0
    err = capsys.readouterr().err
    assert "--allow security.insecure" in err and "Traceback" not in err and "internal error" not in err


def test_runs_privileged_with_it_and_is_cached_apart(bb_ctx: Path, root: Path, tmp_path: Path) -> None:
    write(bb_ctx, {"Dockerfile": INSECURE})
    layerbuild.build(bb_ctx, root=root, tags=["insecure:1"], allow=["security.insecure"])
    status = status_of(root, "insecure:1", tmp_path / "a")
    assert int(status["CapEff"], 16) & (1 << 21)  # CAP_SYS_ADMIN
    assert status["Seccomp"] == "0" and status["NoNewPrivs"] == "0"
    assert (tmp_path / "a" / "ns").is_file()
    # A cached insecure step still needs the entitlement.
    with pytest.raises(layerbuild.LayerbuildError, match=r"security\.insecure"):
        layerbuild.build(bb_ctx, root=root)
    # The same command sandboxed is another step: not answered from the insecure one's cache.
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE + f"RUN {STATUS} > /status\n"})
    result = layerbuild.build(bb_ctx, root=root, tags=["sandboxed:1"])
    step = next(s for s in result.steps if STATUS in s.instruction)
    assert not step.cached
    status = status_of(root, "sandboxed:1", tmp_path / "b")
    assert not int(status["CapEff"], 16) & (1 << 21)
    assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1"


def test_cli_allow_flag(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": INSECURE})
    assert main(["--root", str(root), "build", "--progress", "quiet", "--allow", "security.insecure",
                 "-t", "x:1", str(bb_ctx)]) == 0


def test_unknown_entitlement_is_a_usage_error(bb_ctx: Path, root: Path) -> None:
    write(bb_ctx, {"Dockerfile": BUSYBOX_BASE})
    with pytest.raises(layerbuild.UsageError, match=r"unknown entitlement .security\.bogus."):
        layerbuild.build(bb_ctx, root=root, allow=["security.bogus"])
