"""cgroups: limits parsed as docker parses them, the v2 and v1 files they become (a fake cgroupfs for
the pure file logic), and real RUN-style steps in real cgroups: OOM, the pids limit, the device
allow-list, no CAP_MKNOD without a device controller, leftovers of a dead process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from layerbuild.errors import UsageError
from layerbuild.runtime import ProcessSpec, cgroups, launch, run_step
from layerbuild.runtime.cgroups import Cgroup, Hierarchy
from layerbuild.runtime.limits import (
    DEFAULT_PIDS_LIMIT,
    Limits,
    parse_limits,
    parse_memory,
    v1_files,
    v2_files,
)
from layerbuild.store.layout import proc_start_time
from tests.conftest import REPO

# -- parsing and the files limits become (pure) --------------------------------------------------


def test_docker_memory_sizes() -> None:
    assert parse_memory("64m") == 64 << 20
    assert parse_memory("64M") == parse_memory("64MB") == parse_memory("64MiB") == 64 << 20
    assert parse_memory("1.5g") == 3 << 29
    assert parse_memory("512k") == 512 << 10
    assert parse_memory("1048576") == 1 << 20
    for bad in ("", "64x", "-1", "m", "1..5g"):
        with pytest.raises(UsageError, match="invalid --memory"):
            parse_memory(bad)


def test_limits_are_checked_as_docker_checks_them() -> None:
    assert parse_limits("64m", "-1", "1.5", "100") == Limits(64 << 20, -1, 1.5, 100)
    assert parse_limits(pids="0").pids == parse_limits(pids="-1").pids == -1
    assert parse_limits(pids="-1").pids_max() is None
    assert Limits().pids_max() == DEFAULT_PIDS_LIMIT and not Limits().requested()
    with pytest.raises(UsageError, match="too small"):
        parse_limits("1m")
    with pytest.raises(UsageError, match="--memory-swap needs --memory"):
        parse_limits(memory_swap="1g")
    with pytest.raises(UsageError, match="smaller than --memory"):
        parse_limits("64m", "32m")
    with pytest.raises(UsageError, match="range of CPUs is from"):
        parse_limits(cpus=str((os.cpu_count() or 1) + 1))
    with pytest.raises(UsageError, match="invalid --cpus"):
        parse_limits(cpus="lots")
    with pytest.raises(UsageError, match="invalid --pids-limit"):
        parse_limits(pids="many")


def test_v2_files() -> None:
    assert v2_files(Limits(64 << 20, None, 1.5, 100)) == [
        ("memory.max", str(64 << 20)), ("memory.swap.max", str(64 << 20)),  # docker: swap as much as memory
        ("cpu.max", "150000 100000"), ("pids.max", "100")]
    assert v2_files(Limits(64 << 20, -1)) == [
        ("memory.max", str(64 << 20)), ("memory.swap.max", "max"), ("pids.max", "2048")]
    assert v2_files(Limits(64 << 20, 100 << 20, pids=-1))[1:] == [
        ("memory.swap.max", str(36 << 20)), ("pids.max", "max")]


def test_v1_files_and_docker_device_policy() -> None:
    files = v1_files(Limits(64 << 20, None, 0.5, 10))
    assert files[:5] == [("memory", "memory.limit_in_bytes", str(64 << 20)),
                         ("memory", "memory.memsw.limit_in_bytes", str(128 << 20)),
                         ("cpu", "cpu.cfs_period_us", "100000"), ("cpu", "cpu.cfs_quota_us", "50000"),
                         ("pids", "pids.max", "10")]
    devices = [value for ctrl, _, value in files if ctrl == "devices"]
    assert devices[0] == "a"  # deny everything first
    assert set(devices[1:]) == {"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                                "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm",
                                "c 10:200 rwm"}


def _fake_v2(base: Path, monkeypatch: pytest.MonkeyPatch, controllers: str = "cpu memory pids") -> Path:
    """A v2 hierarchy's root and one child (the caller's cgroup) as plain files; writing `+ctrl` to a
    cgroup.subtree_control adds it there and to the children's cgroup.controllers, as the kernel does."""
    for d in (base, base / "user"):
        d.mkdir(exist_ok=True)
        (d / "cgroup.controllers").write_text(controllers + "\n" if d == base else "")
        (d / "cgroup.subtree_control").write_text("")
    real = cgroups._write

    def write(path: Path, value: str) -> None:
        if path.name != "cgroup.subtree_control":
            return real(path, value)
        added = [w[1:] for w in value.split()]
        assert set(added) <= set((path.parent / "cgroup.controllers").read_text().split()), value
        have = (path.read_text().split())
        path.write_text(" ".join(sorted({*have, *added})))
        for child in path.parent.iterdir():
            if (child / "cgroup.controllers").exists():
                (child / "cgroup.controllers").write_text(path.read_text())

    monkeypatch.setattr(cgroups, "_write", write)
    return base / "user"


def test_v2_controllers_are_enabled_from_the_root_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = _fake_v2(tmp_path / "cg", monkeypatch)
    assert cgroups.enable_v2(user, {"memory", "cpu"}, optional={"pids"}) == {"cpu", "memory", "pids"}
    assert (tmp_path / "cg" / "cgroup.subtree_control").read_text() == "cpu memory pids"
    assert (user / "cgroup.subtree_control").read_text() == "cpu memory pids"
    assert cgroups.enable_v2(user, {"memory"}) == {"cpu", "memory", "pids"}  # nothing more to write
    # An optional controller the hierarchy lacks is left out; a needed one is an error.
    other = _fake_v2(tmp_path / "cg2", monkeypatch, controllers="memory")
    assert cgroups.enable_v2(other, {"memory"}, optional={"pids"}) == {"memory"}
    with pytest.raises(OSError, match="no cgroup controller"):
        cgroups.enable_v2(other, {"cpu"})


def test_v2_missing_controller_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user = _fake_v2(tmp_path / "cg", monkeypatch, controllers="cpu")
    # Asked-for limits that cannot be applied: a SandboxError with a hint, before anything runs.
    hierarchy = Hierarchy(2, {"": user}, tmp_path / "cg")
    with pytest.raises(cgroups.SandboxError, match="cannot apply the resource limits") as info:
        cgroups.create(Limits(memory=64 << 20), hierarchy=hierarchy)
    assert info.value.hint
    # No limit asked for: no cgroup, and no error.
    assert cgroups.create(Limits(), hierarchy=Hierarchy(1, {})) is None


def test_v2_reports_and_kill_file(tmp_path: Path) -> None:
    cg = Cgroup(2, {"": tmp_path})
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (tmp_path / "pids.events").write_text("max 0\n")
    (tmp_path / "cgroup.procs").write_text("")
    (tmp_path / "cgroup.kill").write_text("")
    assert cg.oom_kills() == 1 and cg.pids_limit_hits() == 0
    assert cg.diagnosis(137) == "killed: out of memory" and cg.diagnosis(0) is None
    cg.kill()
    assert (tmp_path / "cgroup.kill").read_text() == "1"
    assert Cgroup.from_json(cg.to_json()).dirs == cg.dirs  # type: ignore[union-attr]


def test_join_files_are_v1_tasks_and_v2_cgroup_procs(tmp_path: Path) -> None:
    """A process of one thread joins v1 through `tasks` (no threadgroup lock, see `join_files`),
    once per directory where controllers share a hierarchy; v2 through `cgroup.procs`."""
    cpu = tmp_path / "cpu,cpuacct" / "c"
    v1 = Cgroup(1, {"cpu": cpu, "cpuacct": cpu, "pids": tmp_path / "pids" / "c"})
    assert v1.join_files() == [str(cpu / "tasks"), str(tmp_path / "pids" / "c" / "tasks")]
    v2 = Cgroup(2, {"": tmp_path / "c"})
    assert v2.join_files() == [str(tmp_path / "c" / "cgroup.procs")]


def test_hierarchy_detection(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("cpu memory pids\n")
    (unified / "a").mkdir()
    memory = tmp_path / "memory"
    (memory / "m").mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"30 25 0:26 / {unified} rw,relatime shared:4 - cgroup2 cgroup2 rw\n"
        f"31 25 0:27 / {memory} rw,relatime shared:5 - cgroup cgroup rw,memory\n")
    membership = tmp_path / "cgroup"
    membership.write_text("4:memory:/m\n0::/a\n")
    assert Hierarchy.detect(str(mountinfo), str(membership)) == Hierarchy(2, {"": unified / "a"}, unified)
    (unified / "cgroup.controllers").write_text("hugetlb\n")  # v1 holds the controllers: v1 it is
    assert Hierarchy.detect(str(mountinfo), str(membership)) == Hierarchy(1, {"memory": memory / "m"})


# -- real cgroups ----------------------------------------------------------------------------------

# A fork bomb (busybox's sh gives up where a fork fails, so it dies down and flares up again), then
# PID 1 starts long sleeps until its own fork fails: that always happens, at the limit.
BOMB = "b() { b | b & }; b; i=0; while [ $i -lt 1000 ]; do sleep 1000 & i=$((i+1)); done; echo unlimited"

needs_cgroups = pytest.mark.skipif(
    os.geteuid() != 0 or not Hierarchy.detect().parents, reason="needs root and a cgroup hierarchy")


def _step(lowers: list[Path], scratch: Path, script: str, limits: Limits | None = None) -> tuple[int, str, str | None]:
    res = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("/bin/sh", "-c", script)),
                   limits=limits)
    return res.exit_code, res.output_tail.decode(), res.error


def _our_cgroups() -> list[Path]:
    return [p for parent in Hierarchy.detect().parents.values()
            for p in parent.glob(f"{cgroups.PREFIX}{os.getpid()}-*")]


@pytest.mark.integration
@needs_cgroups
def test_memory_hog_is_killed_137_out_of_memory(lowers: list[Path], scratch: Path) -> None:
    code, out, error = _step(lowers, scratch, "echo start; dd if=/dev/zero of=/dev/null bs=100M count=1",
                             parse_limits(memory="32m"))
    assert code == 137
    assert error == "killed: out of memory"
    assert "start" in out and "layerbuild: killed: out of memory" in out
    assert not _our_cgroups()  # removed when the step ended
    # The same step without a memory limit runs (the hog is not a hog without one).
    assert _step(lowers, scratch, "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null; echo ok")[:2] == (0, "ok\n")


@pytest.mark.integration
@needs_cgroups
def test_fork_bomb_stops_at_the_pids_limit(lowers: list[Path], scratch: Path) -> None:
    code, out, error = _step(lowers, scratch, BOMB, parse_limits(pids="24"))
    assert code != 0
    assert error == "the process limit (24) was reached: a fork failed"
    assert "can't fork" in out
    assert not _our_cgroups()


@pytest.mark.integration
@needs_cgroups
def test_device_allow_list(lowers: list[Path], scratch: Path) -> None:
    if not Hierarchy.detect().parents.get("devices"):
        pytest.skip("no v1 devices controller")
    script = ("mknod /tmp/h c 10 183 && head -c1 /tmp/h; echo tmp=$?;"
              "mknod /dev/h c 10 183 && head -c1 /dev/h; echo dev=$?;"
              "mknod /dev/sda8 b 8 0 && head -c1 /dev/sda8; echo blk=$?;"
              "echo urandom=$(head -c4 /dev/urandom | wc -c) zero=$(head -c4 /dev/zero | wc -c);"
              "echo x > /dev/null && echo null=ok; echo x 2>/dev/null > /dev/full || echo full=ENOSPC")
    code, out, _ = _step(lowers, scratch, script)
    assert code == 0
    assert "tmp=1" in out and "dev=1" in out and "blk=1" in out  # the nodes are made but do not open
    # the device cgroup refuses them (EPERM), or before it the nodev mounts do (EACCES)
    assert out.count("Operation not permitted") + out.count("Permission denied") == 3
    assert out.split()[-4:] == ["urandom=4", "zero=4", "null=ok", "full=ENOSPC"]


@pytest.mark.integration
@needs_cgroups
def test_dev_tty_works_through_a_pty(tmp_path: Path, shared_root: Path) -> None:
    """`run -t` in a terminal: /dev/tty (5:0) and /dev/ptmx (5:2) are on the allow-list."""
    cmd = (f"{Path(sys.executable).parent / 'layerbuild'} --root {shared_root} run --rm -t busybox "
           "sh -c 'echo via-tty > /dev/tty && exec 3<>/dev/ptmx && echo ptmx=ok'")
    proc = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "via-tty" in proc.stdout and "ptmx=ok" in proc.stdout


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_without_a_device_controller_cap_mknod_is_dropped(lowers: list[Path], scratch: Path) -> None:
    script = "grep CapBnd /proc/self/status; mknod /tmp/h c 1 3 && echo made; head -c4 /dev/zero | wc -c"
    started = launch(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("/bin/sh", "-c", script)),
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cgroup=None)
    assert started.helper.stdout is not None
    out = started.helper.stdout.read().decode()
    assert started.wait() == 0
    started.release()
    bounding = int(out.split()[1], 16)
    assert not bounding & (1 << 27), out  # CAP_MKNOD
    assert "made" not in out and "Operation not permitted" in out
    assert out.split()[-1] == "4"  # the sandbox's own /dev nodes still work


@pytest.mark.integration
@needs_cgroups
def test_a_dead_process_leftover_cgroups_are_removed_by_the_next(tmp_path: Path) -> None:
    code = ("import os; from layerbuild.runtime import cgroups; cg = cgroups.create(cgroups.Limits(pids=5));"
            "print(cg.procs_files()[0]); os._exit(0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    left = Path(proc.stdout.strip()).parent
    assert left.is_dir() and left.name.startswith(cgroups.PREFIX)
    cg = cgroups.create(Limits(pids=5))
    assert cg is not None
    try:
        assert not left.exists()
        assert all(d.is_dir() for d in cg.dirs.values())
        assert cgroups.remove_leftovers() == 0  # a live process's cgroup stays
    finally:
        cg.remove()
    assert not any(d.exists() for d in cg.dirs.values())


@pytest.mark.integration
@needs_cgroups
def test_a_cgroup_whose_creator_is_a_zombie_is_a_leftover() -> None:
    """A creator that has exited but is not reaped yet (its parent has not waited) runs no more:
    its cgroups are leftovers, as a vanished creator's are."""
    code = ("import os, sys; from layerbuild.runtime import cgroups; cg = cgroups.create(cgroups.Limits(pids=5));"
            "print(cg.procs_files()[0], flush=True); sys.stdout.close(); os._exit(0)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        left = Path(proc.stdout.read().strip()).parent
        deadline = time.monotonic() + 30
        while proc_start_time(proc.pid) is not None:  # until it is a zombie: exited, not waited for
            assert time.monotonic() < deadline, "the creator did not exit"
            time.sleep(0.01)
        assert Path(f"/proc/{proc.pid}").exists()  # still there, as a zombie
        assert left.is_dir()
        assert cgroups.remove_leftovers() >= 1
        assert not left.exists()
    finally:
        proc.wait()


LEFT_BEHIND = """
import json, os, subprocess, sys
from layerbuild.runtime import cgroups
cg = cgroups.create(cgroups.Limits(pids=5), label=sys.argv[1])
join = "; ".join(f"echo $$ > {f}" for f in cg.procs_files())
sleeper = subprocess.Popen(["sh", "-c", f"{join}; exec sleep 1000"], start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while len(cg.pids()) < 1:
    pass
print(sleeper.pid, json.dumps(cg.to_json()), flush=True)
os._exit(0)  # as a SIGKILLed build (or a detached run's CLI) does: the process goes on in its cgroup
"""


def _left_behind(label: str) -> tuple[int, Cgroup]:
    proc = subprocess.run([sys.executable, "-c", LEFT_BEHIND, label], capture_output=True, text=True, check=True,
                          cwd=REPO, timeout=60)
    pid, data = proc.stdout.split(" ", 1)
    cg = Cgroup.from_json(json.loads(data))
    assert cg is not None and proc_start_time(int(pid)) is not None
    return int(pid), cg


@pytest.mark.integration
@needs_cgroups
def test_a_killed_build_steps_processes_are_killed_by_the_next() -> None:
    step_pid, step = _left_behind(cgroups.STEP_LABEL + "0123")
    other_pid, other = _left_behind("0123456789ab")  # a detached container's: it may well run on
    try:
        cg = cgroups.create(Limits())  # the next step or run cleans up first
        assert cg is not None
        cg.remove()
        assert not any(d.exists() for d in step.dirs.values())
        assert proc_start_time(step_pid) is None  # killed (gone, or a zombie until init reaps it)
        assert proc_start_time(other_pid) is not None and all(d.is_dir() for d in other.dirs.values())
    finally:
        step.remove()
        other.remove()
    assert proc_start_time(other_pid) is None and not any(d.exists() for d in other.dirs.values())


@pytest.mark.integration
@needs_cgroups
def test_kill_reaches_a_double_fork(tmp_path: Path) -> None:
    """Processes outside any PID namespace: only the cgroup knows them all."""
    cg = cgroups.create(Limits(pids=50))
    assert cg is not None
    join = "; ".join(f"echo $$ > {f}" for f in cg.procs_files())
    marker = f"sleep {4000 + os.getpid() % 1000}"
    shell = subprocess.Popen(["sh", "-c", f"{join}; ({marker} &) ; ({marker} &); exec {marker}"])
    try:
        while len(cg.pids()) < 3:  # the shell and the two sleeps that left it
            time.sleep(0.01)
        members = cg.pids()
        cg.kill()
        assert cg.pids() == []
        assert shell.wait(timeout=10) == -9
        assert not [p for p in members if Path(f"/proc/{p}").exists() and marker.encode()
                    in Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")]
    finally:
        cg.remove()


def _unified() -> Hierarchy | None:
    """The real cgroup v2 hierarchy this process is in (even with no controllers, as beside v1)."""
    detected = Hierarchy.detect()
    if detected.version == 2:
        return detected
    mount = next((Path(line.split()[4]) for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split(" - ")[1].startswith("cgroup2 ")), None)
    path = next((line[3:].lstrip("/") for line in Path("/proc/self/cgroup").read_text().splitlines()
                 if line.startswith("0::")), None)
    if mount is None or path is None:
        return None
    return Hierarchy(2, {"": mount / path}, mount)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or _unified() is None, reason="needs root and a cgroup2 mount")
def test_v2_cgroup_on_the_real_unified_hierarchy(lowers: list[Path], scratch: Path) -> None:
    """The v2 path for real: join before exec, the device filter, cgroup.kill after a double fork,
    removal. Beside v1 the unified hierarchy has no controllers, so a limit there is a clear error."""
    hierarchy = _unified()
    assert hierarchy is not None
    controllers = set((hierarchy.parents[""] / "cgroup.controllers").read_text().split())
    if "memory" not in controllers:
        with pytest.raises(cgroups.SandboxError, match="cannot apply the resource limits"):
            cgroups.create(Limits(memory=64 << 20), hierarchy=hierarchy)
    cg = cgroups.create(Limits(), hierarchy=hierarchy)
    assert cg is not None and cg.version == 2
    assert cg.device_filter  # the allow-list as a BPF program: v2 has no devices controller
    marker = f"sleep {7000 + os.getpid() % 1000}"
    script = (f"grep ^0:: /proc/self/cgroup; mknod /tmp/h c 10 183 && head -c1 /tmp/h 2>&1; head -c1 /dev/zero | wc -c;"
              f"({marker} &); exec {marker}")
    try:
        started = launch(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("/bin/sh", "-c", script)),
                         stdout=subprocess.PIPE, cgroup=cg)
        assert started.helper.stdout is not None
        assert started.helper.stdout.readline().decode().strip() == f"0::/{cg.dirs[''].relative_to(hierarchy.mount or '/')}"
        line = started.helper.stdout.readline()  # made, but it does not open (nodev or the device filter)
        assert b"Operation not permitted" in line or b"Permission denied" in line
        assert started.helper.stdout.readline() == b"1\n"
        while len(cg.pids()) < 2:
            time.sleep(0.01)
        assert started.helper.pid not in cg.pids()  # the helper stays outside: it outlives the kill
        cg.kill()
        assert started.wait() == 137 and cg.pids() == []
        started.release()
    finally:
        cg.remove()
    assert not cg.dirs[""].exists()


def _interpret(code: bytes, access_type: int, major: int, minor: int) -> int:
    """Run a device filter the way the kernel would, for the few instructions it uses."""
    import struct

    regs = [0] * 11
    ctx = (access_type, major, minor)
    insns = [struct.unpack("<BBhi", code[i:i + 8]) for i in range(0, len(code), 8)]
    pc = 0
    while True:
        op, regbyte, off, imm = insns[pc]
        dst, src = regbyte & 0xF, regbyte >> 4
        pc += 1
        if op == 0x61:
            assert src == 1
            regs[dst] = ctx[off // 4]
        elif op == 0xBF:
            regs[dst] = regs[src]
        elif op == 0xB7:
            regs[dst] = imm
        elif op == 0x57:
            regs[dst] &= imm & 0xFFFFFFFFFFFFFFFF
        elif op == 0x77:
            regs[dst] >>= imm
        elif op == 0x55:
            if regs[dst] != imm:
                pc += off
        elif op == 0x95:
            return regs[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")


def test_device_filter_program_is_dockers_policy() -> None:
    from layerbuild.runtime.devicefilter import program
    from layerbuild.runtime.limits import ALLOWED_DEVICES

    code = program(ALLOWED_DEVICES)

    def allowed(kind: str, major: int, minor: int, access: str) -> bool:
        for t, ma, mi, acc in ALLOWED_DEVICES:
            if t == kind and ma in ("*", str(major)) and mi in ("*", str(minor)) and set(access) <= set(acc):
                return True
        return False

    cases = [(kind, major, minor, access) for kind in "cb" for major, minor in
             ((1, 3), (1, 5), (1, 9), (1, 4), (5, 0), (5, 2), (10, 183), (10, 200), (136, 7), (8, 0), (7, 0))
             for access in ("m", "r", "w", "rw", "rwm", "mr")]
    for kind, major, minor, access in cases:
        access_type = sum({"m": 1, "r": 2, "w": 4}[a] for a in access) << 16 | {"c": 2, "b": 1}[kind]
        assert _interpret(code, access_type, major, minor) == allowed(kind, major, minor, access), \
            (kind, major, minor, access)
    assert allowed("c", 10, 183, "m") and not allowed("c", 10, 183, "r")  # the cases do test both ways
