"""Resource limits and cgroups through the CLI and the library: `run --memory/--cpus/--pids-limit`,
`stop` after a double fork, concurrent `run --name`, build-wide limits for RUN steps, rootless."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import layerbuild
from layerbuild.cli.main import main
from layerbuild.errors import BuildError
from layerbuild.runtime import cgroups, containers
from layerbuild.runtime.cgroups import Cgroup, Hierarchy
from tests.cli.kit import busybox_root, lb
from tests.conftest import BUSYBOX_BASE, REPO
from tests.runtime.conftest import busybox_tar
from tests.runtime.rootless import as_user, python_for_user, rootless_home  # noqa: F401
from tests.runtime.test_cgroups import BOMB

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not Hierarchy.detect().parents, reason="needs root and cgroups"),
]
LAYERBUILD = Path(sys.executable).parent / "layerbuild"


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with busybox_root("lb-cli-limits-") as root:
        yield root


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    path = tmp_path / "ctx"
    path.mkdir()
    return path




def _cgroup(root: Path, ref: str) -> Cgroup:
    cg = Cgroup.from_json(containers.find(root, ref).cgroup)
    assert cg is not None
    return cg


def _processes(needle: str) -> list[int]:
    """Host processes whose command line contains `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if needle in cmdline:
                found.append(int(entry))
    return found


def test_run_memory_hog_exits_137_out_of_memory(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = lb(root, capfd, "run", "--rm", "--memory", "32m", "busybox",
                      "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
    assert code == 137
    assert "killed: out of memory" in err
    assert lb(root, capfd, "run", "--rm", "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M",
              "count=1")[0] == 0


def test_run_fork_bomb_stops_at_the_pids_limit(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = lb(root, capfd, "run", "--rm", "--pids-limit", "24", "busybox", "sh", "-c", BOMB)
    assert code == 2 and "unlimited" not in out
    assert "can't fork" in err and "the process limit (24) was reached" in err


def test_run_limits_are_in_the_cgroup_files(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = lb(root, capfd, "run", "-d", "--cpus", "1.5", "--memory", "64m", "--memory-swap", "-1",
                      "busybox", "sleep", "1000")
    assert code == 0
    cid = out.strip()
    cg = _cgroup(root, cid)
    container = containers.find(root, cid)
    assert all(str(container.pid) in (d / "cgroup.procs").read_text().split() for d in cg.dirs.values())
    if cg.version == 2:
        d = cg.dirs[""]
        assert (d / "cpu.max").read_text().split() == ["150000", "100000"]
        assert (d / "memory.max").read_text().strip() == str(64 << 20)
        assert (d / "pids.max").read_text().strip() == "2048"
    else:
        assert (cg.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "150000"
        assert (cg.dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
        assert (cg.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (cg.dirs["pids"] / "pids.max").read_text().strip() == "2048"  # the default limit
        assert "a *:* rwm" not in (cg.dirs["devices"] / "devices.list").read_text()
    assert lb(root, capfd, "stop", "-t", "0", cid)[0] == 0
    assert not any(d.exists() for d in cg.dirs.values())  # removed once it stopped
    assert lb(root, capfd, "rm", cid)[0] == 0


def _membership(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controller: path} ("" for v2's line)."""
    out = {}
    for line in text.splitlines():
        _, ctrls, path = line.split(":", 2)
        for ctrl in ctrls.split(",") if ctrls else [""]:
            out[ctrl] = path
    return out


def _in_cgroup(membership: dict[str, str], cg: Cgroup) -> bool:
    return all(membership.get(ctrl, "").endswith("/" + d.name) for ctrl, d in cg.dirs.items())


def test_run_and_exec_processes_are_in_every_controller_of_the_cgroup(root: Path,
                                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """The container's first process (and what it forks) is in each of its cgroup's hierarchies
    before any of its code runs (nsinit joins before exec: v1 `tasks`, v2 `cgroup.procs`); a
    process started by `exec` joins the same cgroup."""
    code, out, _ = lb(root, capfd, "run", "-d", "busybox", "sh", "-c", "cat /proc/self/cgroup; exec sleep 1000")
    assert code == 0
    cid = out.strip()
    cg = _cgroup(root, cid)
    container = containers.find(root, cid)
    assert cg.dirs and _in_cgroup(_membership(Path(f"/proc/{container.pid}/cgroup").read_text()), cg)
    deadline = time.monotonic() + 10
    while not container.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _in_cgroup(_membership(container.log_path.read_text()), cg)  # cat, forked by PID 1
    code, out, _ = lb(root, capfd, "exec", cid, "cat", "/proc/self/cgroup")
    assert code == 0 and _in_cgroup(_membership(out), cg)
    assert lb(root, capfd, "rm", "-f", cid)[0] == 0
    code, out, _ = lb(root, capfd, "run", "--rm", "busybox", "cat", "/proc/self/cgroup")
    assert code == 0
    ours = [line.rpartition("/")[2] for line in out.splitlines() if cgroups.PREFIX in line]
    controllers = Hierarchy.detect().parents
    assert len(ours) == len({str(p) for p in controllers.values()}) and len(set(ours)) == 1, out


def test_bad_limits_are_usage_errors(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    for flags, message in ((["--memory", "lots"], "invalid --memory"), (["--cpus", "0"], "range of CPUs"),
                           (["--memory-swap", "1g"], "--memory-swap needs --memory"),
                           (["--pids-limit", "x"], "invalid --pids-limit")):
        code, _, err = lb(root, capfd, "run", "--rm", *flags, "busybox", "true")
        assert code == 125 and message in err and "hint:" in err and "Traceback" not in err


def test_run_device_allow_list(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    if "devices" not in Hierarchy.detect().parents:
        pytest.skip("no v1 devices controller (v2: CAP_MKNOD is dropped, see tests/runtime/test_cgroups.py)")
    code, out, err = lb(root, capfd, "run", "--rm", "busybox", "sh", "-c",
                        "mknod /tmp/h c 10 183 && head -c1 /tmp/h; echo tmp=$?; mknod /dev/h c 10 183 && "
                        "head -c1 /dev/h; echo dev=$?; echo zero=$(head -c3 /dev/zero | wc -c)")
    assert code == 0 and out.split() == ["tmp=1", "dev=1", "zero=3"]
    assert err.count("Operation not permitted") + err.count("Permission denied") == 2  # cgroup, or nodev first


def test_stop_leaves_no_process_after_a_double_fork(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    marker = f"sleep {100000 + os.getpid()}"
    code, out, _ = lb(root, capfd, "run", "-d", "busybox", "sh", "-c", f"({marker} &) ; {marker}")
    assert code == 0
    cid = out.strip()
    cg = _cgroup(root, cid)
    while len(_processes(marker)) < 2:  # the daemonized sleep and the shell's own
        time.sleep(0.01)
    assert set(_processes(marker)) <= set(cg.pids())
    assert lb(root, capfd, "stop", "-t", "1", cid)[0] == 0
    assert _processes(marker) == []
    assert not any(d.exists() for d in cg.dirs.values())
    assert lb(root, capfd, "rm", cid)[0] == 0


def test_concurrent_runs_with_one_name_have_one_winner(root: Path) -> None:
    name = f"race-{os.getpid()}"
    argv = [str(LAYERBUILD), "--root", str(root), "run", "-d", "--name", name, "busybox", "sleep", "1000"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(12)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    try:
        winners = [r for r in results if r[0] == 0]
        assert len(winners) == 1, results
        for code, _, err in results:
            if code != 0:
                assert code == 125 and f'the container name "{name}" is already in use' in err, err
                assert "Traceback" not in err
        assert [c.name for c in containers.list_all(root)].count(name) == 1
    finally:
        assert main(["--root", str(root), "rm", "-f", name]) == 0
    # Once removed, the name is free again.
    assert main(["--root", str(root), "run", "--rm", "--name", name, "busybox", "true"]) == 0


# -- build-wide limits for RUN steps --------------------------------------------------------------


def test_build_run_step_out_of_memory(bb_ctx: Path, tmp_path: Path) -> None:
    (bb_ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN dd if=/dev/zero of=/dev/null bs=100M count=1\n")
    with pytest.raises(BuildError, match=r"exit code 137 \(killed: out of memory\)"):
        layerbuild.build(bb_ctx, root=tmp_path / "store", memory="32m")


def test_build_run_step_fork_bomb(bb_ctx: Path, tmp_path: Path) -> None:
    (bb_ctx / "Dockerfile").write_text(BUSYBOX_BASE + f"RUN {BOMB}\n")
    with pytest.raises(BuildError, match=r"the process limit \(24\) was reached"):
        layerbuild.build(bb_ctx, root=tmp_path / "store", pids_limit=24)


def test_build_limits_are_not_part_of_cache_keys(bb_ctx: Path, tmp_path: Path) -> None:
    (bb_ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN echo hi > /f\n")
    first = layerbuild.build(bb_ctx, root=tmp_path / "store", memory="64m", cpus=1, no_cache=True)
    (bb_ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN echo hi > /f\n\n")  # not the fast path's answer
    again = layerbuild.build(bb_ctx, root=tmp_path / "store", cpus="0.5")
    assert again.image.id == first.image.id
    assert all(step.cached for step in again.steps)


def test_build_cli_limits(bb_ctx: Path, tmp_path: Path) -> None:
    (bb_ctx / "Dockerfile").write_text(BUSYBOX_BASE + "RUN dd if=/dev/zero of=/dev/null bs=100M count=1\n")
    base = [str(LAYERBUILD), "--root", str(tmp_path / "store"), "build", "--progress", "plain"]
    proc = subprocess.run([*base, "-m", "32m", str(bb_ctx)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "killed: out of memory" in proc.stderr
    proc = subprocess.run([*base, "--cpus", "many", str(bb_ctx)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid --cpus" in proc.stderr and "Traceback" not in proc.stderr


# -- rootless --------------------------------------------------------------------------------------

ROOTLESS = r"""
import io, sys
from pathlib import Path
from layerbuild.cli.main import main
from layerbuild.image import import_rootfs
from layerbuild.store import Store

home = Path(sys.argv[1])
with Store.open(home / "root") as store, open(home / "busybox.tar", "rb") as f:
    import_rootfs(store, f, "busybox")
sys.exit(main(["--root", str(home / "root"), "run", "--rm", *sys.argv[2:], "busybox", "sh", "-c", "echo ran"]))
"""


def test_rootless_limits_need_cgroups_and_no_limit_runs_without(rootless_home: Path) -> None:  # noqa: F811
    (rootless_home / "busybox.tar").write_bytes(busybox_tar())
    (rootless_home / "limits.py").write_text(ROOTLESS)
    python, env = python_for_user(rootless_home)
    proc = as_user([python, str(rootless_home / "limits.py"), str(rootless_home)], env)
    assert (proc.returncode, proc.stdout) == (0, "ran\n"), proc.stderr
    proc = as_user([python, str(rootless_home / "limits.py"), str(rootless_home), "--memory", "64m"], env)
    assert proc.returncode == 125 and proc.stdout == "", proc.stderr
    assert "cannot apply the resource limits" in proc.stderr and "rootless" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prune_removes_leftover_cgroups(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = ("import os; from layerbuild.runtime import cgroups; cg = cgroups.create(cgroups.Limits(pids=5));"
            "print(json.dumps(cg.to_json())); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    left = Cgroup.from_json(json.loads(proc.stdout))
    assert left is not None and all(d.is_dir() for d in left.dirs.values())
    assert lb(root, capfd, "prune")[0] == 0
    assert not any(d.exists() for d in left.dirs.values())
    assert cgroups.remove_leftovers() == 0
