"""The sandbox's confinement, reproduced from inside: device nodes, seccomp, no_new_privs, masked paths."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.image import import_rootfs, resolve_image
from layerbuild.runtime import ProcessSpec, SandboxError, lower_dirs_for, run_step
from layerbuild.runtime import seccomp as seccomp_mod
from layerbuild.store import Store
from tests.runtime.rootless import as_user, python_for_user, rootless_home  # noqa: F401

pytestmark = pytest.mark.integration

MODES = ["overlay", "copy"]


def sh(script: str, **kw: object) -> ProcessSpec:
    return ProcessSpec(argv=("/bin/sh", "-c", script), **kw)  # type: ignore[arg-type]


def run(lowers: list[Path], scratch: Path, spec: ProcessSpec, **kw: object) -> tuple[int, str]:
    result = run_step(lowers, scratch / "upper", scratch / "work", spec, **kw)  # type: ignore[arg-type]
    return result.exit_code, result.output_tail.decode()


def with_devices(busybox: bytes) -> bytes:
    """The busybox rootfs plus 0666 device nodes an image could ship: /zero (c 1:5), /loop (b 7:0)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(busybox)) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in src.getmembers():
            tar.addfile(member, src.extractfile(member) if member.isfile() else None)
        for name, kind, major, minor in (("zero", tarfile.CHRTYPE, 1, 5), ("loop", tarfile.BLKTYPE, 7, 0)):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.devmajor, info.devminor, info.mtime = kind, 0o666, major, minor, 1_700_000_000
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture(scope="module")
def device_lowers(shared_root: Path, busybox_rootfs_tar: bytes) -> Iterator[list[Path]]:
    with Store.open(shared_root) as store:
        import_rootfs(store, io.BytesIO(with_devices(busybox_rootfs_tar)), "busybox-devices")
        yield lower_dirs_for(store, resolve_image(store, "busybox-devices").config.diff_ids)


# --- device nodes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("where", ["/tmp", "/dev", "/dev/shm"])
def test_root_cannot_open_a_device_node_it_makes(lowers: list[Path], scratch: Path, mode: str, where: str) -> None:
    # The escape: mknod of a host device (here /dev/zero's 1:5, which exists everywhere) then open.
    script = (f"mknod {where}/z c 1 5 && echo MADE; head -c 4 {where}/z | wc -c;"
              f"mknod {where}/b b 7 0 && echo MADE; head -c 4 {where}/b | wc -c; head -c 4 /dev/zero | wc -c")
    _, out = run(lowers, scratch, sh(script), rootfs=mode)
    lines = out.split()
    # Creating works (as under Docker; where no device cgroup keeps CAP_MKNOD it is refused instead),
    # opening does not; the container's own /dev/zero still reads.
    assert "Permission denied" in out or out.count("Operation not permitted") == 2, out
    assert lines.count("0") == 2 and lines[-1] == "4", out


@pytest.mark.parametrize("mode", MODES)
def test_nodes_made_stay_closed_without_seccomp(lowers: list[Path], scratch: Path, mode: str) -> None:
    _, out = run(lowers, scratch, sh("mknod /dev/z c 1 5; head -c 4 /dev/z | wc -c", seccomp="unconfined"),
                    rootfs=mode)
    assert out.split()[-1] == "0" and ("Permission denied" in out or "Operation not permitted" in out), out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("user", ["1000", ""])
def test_image_device_nodes_do_not_open(device_lowers: list[Path], scratch: Path, mode: str, user: str) -> None:
    _, out = run(device_lowers, scratch, sh("ls -l /zero /loop; head -c 4 /zero | wc -c; head -c 4 /loop | wc -c",
                                               user=user), rootfs=mode)
    assert out.count("crw-rw-rw-") == 1 and out.count("brw-rw-rw-") == 1, out  # they are there ...
    counts = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
    assert counts == ["0", "0"] and "Permission denied" in out, out  # ... and do not open


def test_bind_mounts_are_nodev_below_too(lowers: list[Path], scratch: Path) -> None:
    from layerbuild.runtime import BindMount

    # A bind of the host's / brings the host's devtmpfs along: its nodes must not open either.
    spec = sh("head -c 4 /host/dev/zero | wc -c; grep ' /host/dev ' /proc/self/mounts",
              mounts=(BindMount(Path("/"), "/host"),))
    _, out = run(lowers, scratch, spec)
    assert "Permission denied" in out and "\n0\n" in out and "nodev" in out.split("\n0\n")[1], out


def test_every_mount_but_the_device_binds_is_nodev(lowers: list[Path], scratch: Path, tmp_path: Path) -> None:
    from layerbuild.runtime import BindMount, TmpfsMount

    spec = sh("cat /proc/self/mounts", mounts=(BindMount(tmp_path, "/b"), TmpfsMount("/t")))
    code, out = run(lowers, scratch, spec)
    assert code == 0
    # The device binds, and the masked files (covered by /dev/null, as Docker does), keep their nodes.
    devices = {f"/dev/{n}" for n in ("null", "zero", "full", "random", "urandom", "tty")} | set(MASKED_FILES)
    for line in out.splitlines():
        _, target, fstype, options = line.split()[:4]
        if target in devices or fstype == "devpts":
            continue
        assert "nodev" in options.split(","), line


# --- seccomp and no_new_privs -------------------------------------------------------------------------

NESTED = "unshare -U -r -m sh -c 'mount -t tmpfs t /tmp && echo MOUNTED'"


def test_user_namespace_and_mount_are_refused(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh(NESTED))
    assert code != 0 and "MOUNTED" not in out, out
    assert "Operation not permitted" in out, out


def test_unconfined_allows_what_the_profile_blocks(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh(NESTED, seccomp="unconfined"))
    assert code == 0 and "MOUNTED" in out, out


def test_status_shows_filter_and_no_new_privs(lowers: list[Path], scratch: Path) -> None:
    _, out = run(lowers, scratch, sh("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"))
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out, out
    _, out = run(lowers, scratch, sh("grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status", seccomp="unconfined"))
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t0" in out, out


def test_default_profile_keeps_normal_work_working(lowers: list[Path], scratch: Path) -> None:
    script = ("mkdir -p /w/d && cd /w && echo hi > d/f && ln -s d/f l && chown 1000:1000 d/f && chmod 600 d/f"
              " && cat l && (sleep 0 &) && wait && chroot / true && ls -l d | grep -c f && date +%s >/dev/null"
              " && echo OK")
    code, out = run(lowers, scratch, sh(script))
    assert code == 0 and out.split()[-1] == "OK", out


def test_custom_profile_blocks_a_call(lowers: list[Path], scratch: Path) -> None:
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                          "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]})
    code, out = run(lowers, scratch, sh("mkdir /x && echo MADE", seccomp=profile))
    assert code != 0 and "MADE" not in out and "Permission denied" in out, out
    code, out = run(lowers, scratch, sh("mkdir /y && echo MADE"))
    assert code == 0 and "MADE" in out, out


def test_profile_conditions_on_arguments(lowers: list[Path], scratch: Path) -> None:
    # chmod to mode 0700 refused, any other mode allowed: the args condition is what decides.
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}]},
        {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 2, "value": 0o700, "op": "SCMP_CMP_EQ"}]},
    ]})
    _, out = run(lowers, scratch, sh("touch /f; chmod 644 /f && echo A; chmod 700 /f && echo B", seccomp=profile))
    assert "A" in out.split() and "B" not in out.split(), out


@pytest.mark.parametrize(("text", "message"), [
    ("{", "not valid JSON"),
    ("{}", "no defaultAction"),
    ('{"defaultAction": "SCMP_ACT_NOPE"}', "unsupported action"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}', "names no system call"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",'
     ' "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "bad argument condition"),
])
def test_bad_profiles_are_refused_clearly(lowers: list[Path], scratch: Path, text: str, message: str) -> None:
    with pytest.raises(SandboxError, match=message) as info:
        run(lowers, scratch, sh("true", seccomp=text))
    assert info.value.hint


def test_default_profile_follows_capabilities() -> None:
    # With CAP_SYS_ADMIN (21) the namespace calls are allowed, so the program differs.
    base = seccomp_mod.compile_profile(None, (0, 1))
    assert seccomp_mod.compile_profile(None, (0, 1, 21)) != base
    assert len(base) % 8 == 0 and len(base) > 8 * 100


def test_privileged_keeps_everything(lowers: list[Path], scratch: Path) -> None:
    script = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; unshare -U -r -m true && echo NESTED"
    _, out = run(lowers, scratch, sh(script, privileged=True))
    assert "Seccomp:\t0" in out and "NoNewPrivs:\t0" in out, out
    cap_eff = int(out.split("CapEff:")[1].split()[0], 16)
    assert cap_eff & (1 << 21), out  # CAP_SYS_ADMIN
    assert out.split()[-1] == "NESTED", out


# --- masked and read-only paths -----------------------------------------------------------------------

MASKED_FILES = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
                "/proc/interrupts", "/proc/timer_stats")
MASKED_DIRS = ("/proc/acpi", "/proc/scsi", "/proc/asound", "/sys/firmware", "/sys/devices/virtual/powercap")
READONLY = ("/proc/sys/kernel/domainname", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs")


def _mask_script() -> str:
    checks = [f"[ -e {p} ] && echo {p}=$(cat {p} | wc -c)" for p in MASKED_FILES]
    checks += [f"[ -d {p} ] && echo {p}=$(ls -A {p} | wc -l)" for p in MASKED_DIRS]
    checks += ["echo x > /proc/sys/kernel/domainname 2>/dev/null || echo sys=ro",
               "echo x > /proc/sysrq-trigger 2>/dev/null || echo sysrq=ro",
               "touch /sys/x 2>/dev/null || echo sysfs=ro",
               "grep -E ' /proc/(irq|bus|fs) ' /proc/self/mounts | grep -c '[ ,]ro[ ,]'",
               "ls /sys | grep -c .",
               "true"]
    return "; ".join(checks)


def _check_masks(out: str) -> None:
    found = dict(line.split("=", 1) for line in out.split() if "=" in line)
    for path in (*MASKED_FILES, *MASKED_DIRS):
        if os.path.exists(path):  # what the host has shows nothing inside
            assert found.get(path) == "0", (path, out)
    assert found.get("sys") == "ro" and found.get("sysrq") == "ro" and found.get("sysfs") == "ro", out
    numbers = [w for w in out.split() if w.isdigit()]
    assert int(numbers[-2]) >= 2 and int(numbers[-1]) > 3, out  # ro /proc/irq etc.; /sys is populated


@pytest.mark.parametrize("network", ["default", "none"])
def test_masked_and_readonly_paths(lowers: list[Path], scratch: Path, network: str) -> None:
    code, out = run(lowers, scratch, sh(_mask_script(), network=network))
    assert code == 0, out
    _check_masks(out)


ROOTLESS = r"""
import io, json, sys
from pathlib import Path
from layerbuild.image import import_rootfs, resolve_image
from layerbuild.runtime import ProcessSpec, lower_dirs_for, run_step
from layerbuild.store import Store

home, scripts = Path(sys.argv[1]), json.loads(sys.argv[2])
with Store.open(home / "root") as store:
    with open(home / "busybox.tar", "rb") as f:
        import_rootfs(store, f, "busybox")
    lowers = lower_dirs_for(store, resolve_image(store, "busybox").config.diff_ids)
out = []
for i, (script, network) in enumerate(scripts):
    scratch = home / "root" / "tmp" / f"s{i}"
    res = run_step(lowers, scratch / "upper", scratch / "work",
                   ProcessSpec(argv=("/bin/sh", "-c", script), network=network))
    out.append([res.exit_code, res.output_tail.decode()])
print(json.dumps(out))
"""


def test_rootless_confinement(rootless_home: Path, busybox_rootfs_tar: bytes) -> None:  # noqa: F811
    (rootless_home / "busybox.tar").write_bytes(busybox_rootfs_tar)
    (rootless_home / "step.py").write_text(ROOTLESS)
    python, env = python_for_user(rootless_home)
    scripts = [[NESTED, "default"], ["grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status", "default"],
               [_mask_script(), "default"], [_mask_script(), "none"],
               ["mknod /tmp/z c 1 5 && echo MADE; head -c 4 /dev/zero | wc -c", "default"]]
    proc = as_user([python, str(rootless_home / "step.py"), str(rootless_home), json.dumps(scripts)], env)
    assert proc.returncode == 0, proc.stderr
    (nested, status, masks, masks_netns, devices) = json.loads(proc.stdout)
    assert nested[0] != 0 and "MOUNTED" not in nested[1], nested
    assert "NoNewPrivs:\t1" in status[1] and "Seccomp:\t2" in status[1], status
    _check_masks(masks[1])
    _check_masks(masks_netns[1])
    assert "MADE" not in devices[1] and devices[1].split()[-1] == "4" and not (rootless_home / "root").stat().st_mode & 0o077, devices


def test_compiled_programs_are_kept_in_the_cache_dir(tmp_path: Path) -> None:
    cache = tmp_path / "seccomp"
    program = seccomp_mod.compile_profile(None, (0, 1), cache)
    (path,) = cache.iterdir()
    assert path.read_bytes() == program and not cache.stat().st_mode & 0o077
    path.write_bytes(b"\0" * 16)  # what a later process reads, not compiles
    assert seccomp_mod.compile_profile(None, (0, 1), cache) == b"\0" * 16
    path.write_bytes(b"torn")  # not a whole program: compiled and written again
    assert seccomp_mod.compile_profile(None, (0, 1), cache) == program == path.read_bytes()
    assert seccomp_mod.compile_profile(None, (0, 1, 21), cache) != program and len(list(cache.iterdir())) == 2


GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def test_profile_rules_by_architecture_and_capability(lowers: list[Path], scratch: Path) -> None:
    # Docker's `includes`/`excludes`: arches in Go's names (the machine's own), caps of the container.
    machine = GO_ARCH.get(os.uname().machine)
    if machine is None:
        pytest.skip("an architecture without a Go name here")
    other = "s390x" if machine != "s390x" else "amd64"
    deny = {"action": "SCMP_ACT_ERRNO", "errnoRet": 13}
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "archMap": [], "syscalls": [
        {"names": ["mkdir", "mkdirat"], **deny, "includes": {"arches": [machine]}},
        {"names": ["rmdir"], **deny, "includes": {"arches": [other]}},
        {"names": ["symlink", "symlinkat"], **deny, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["link", "linkat"], **deny, "includes": {"caps": ["CAP_SYS_ADMIN"]}},
    ]})
    script = ("mkdir /a && echo MKDIR; rmdir /tmp && echo RMDIR; ln -s x /s && echo SYMLINK;"
              "touch /f; ln /f /h && echo LINK; true")
    _, out = run(lowers, scratch, sh(script, seccomp=profile))
    assert out.split().count("Permission") == 2, out
    assert set(out.split()) & {"MKDIR", "RMDIR", "SYMLINK", "LINK"} == {"RMDIR", "LINK"}, out
