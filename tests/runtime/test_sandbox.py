"""The isolation primitive on a real busybox image: output, ids, isolation, mounts, whiteouts, fallback."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from layerbuild.layer import Compression, write_overlay_upper
from layerbuild.runtime import BindMount, ProcessSpec, SandboxError, SecretMount, TmpfsMount, launch, run_step
from layerbuild.runtime import sandbox as sandbox_mod

pytestmark = pytest.mark.integration


def sh(script: str, **kw: object) -> ProcessSpec:
    return ProcessSpec(argv=("/bin/sh", "-c", script), **kw)  # type: ignore[arg-type]


def run(lowers: list[Path], scratch: Path, spec: ProcessSpec, **kw: object) -> tuple[int, str]:
    result = run_step(lowers, scratch / "upper", scratch / "work", spec, **kw)  # type: ignore[arg-type]
    return result.exit_code, result.output_tail.decode()


def upper_entries(scratch: Path) -> set[str]:
    upper = scratch / "upper"
    return {os.path.relpath(os.path.join(d, n), upper) for d, ds, fs in os.walk(upper) for n in ds + fs}


def layer_names(scratch: Path) -> list[str]:
    out = io.BytesIO()
    write_overlay_upper(scratch / "upper", out, compression=Compression.NONE)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        return tar.getnames()


def test_output_and_exit_code(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh("echo out; echo err >&2; exit 3"))
    assert code == 3
    assert out == "out\nerr\n"
    assert upper_entries(scratch) == set()


def test_stdout_is_streamed_and_stdin_fed(lowers: list[Path], scratch: Path) -> None:
    sink = io.BytesIO()
    result = run_step(lowers, scratch / "upper", scratch / "work", sh("cat; echo done"), stdout=sink, stdin=b"in\n")
    assert result.exit_code == 0 and sink.getvalue() == b"in\ndone\n" == result.output_tail


def test_env_user_workdir(lowers: list[Path], scratch: Path) -> None:
    spec = sh('echo "$FOO|$HOME|$(pwd)|$(id -u):$(id -g)|$(id -G)|$PATH"', env=("FOO=bar baz",),
              user="app", cwd="/home/app")
    code, out = run(lowers, scratch, spec)
    fields = out.strip().split("|")
    assert code == 0
    assert fields[:4] == ["bar baz", "/home/app", "/home/app", "1000:1000"]
    assert set(fields[4].split()) == {"1000", "2000"}
    assert fields[5].startswith("/usr/local/sbin:")


@pytest.mark.parametrize(("user", "ids"), [("4242", "4242:0"), ("4242:4343", "4242:4343"), ("app:extra", "1000:2000"),
                                           ("", "0:0"), ("root", "0:0")])
def test_user_forms(lowers: list[Path], scratch: Path, user: str, ids: str) -> None:
    code, out = run(lowers, scratch, sh("echo $(id -u):$(id -g)", user=user))
    assert (code, out.strip()) == (0, ids)


def test_unknown_user_is_refused(lowers: list[Path], scratch: Path) -> None:
    with pytest.raises(SandboxError, match="unable to find user nobody"):
        run(lowers, scratch, sh("true", user="nobody"))


def test_missing_workdir_is_created(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh("pwd", cwd="/srv/app"))
    assert (code, out) == (0, "/srv/app\n")
    assert {"srv", "srv/app"} <= upper_entries(scratch)


def test_pid_1_and_no_host_processes(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh("echo $$; ls /proc | grep -c '^[0-9]'; hostname"))
    pid, count, hostname = out.split()
    assert code == 0 and pid == "1" and hostname == "layerbuild"
    assert int(count) <= 3  # sh, ls and grep at most: none of the host's processes


def test_no_host_mounts_and_host_root_unreachable(lowers: list[Path], scratch: Path, tmp_path: Path) -> None:
    marker = tmp_path / "host-marker"
    marker.write_text("secret")
    script = f"cat /proc/self/mounts; test -e {marker} && echo REACHABLE; cd /..; ls /"
    code, out = run(lowers, scratch, sh(script))
    assert code == 0 and "REACHABLE" not in out
    targets = {line.split()[1] for line in out.splitlines() if len(line.split()) >= 6}
    allowed = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"}
    assert targets - allowed <= {t for t in targets if t.startswith(("/proc/", "/dev/", "/sys/"))}
    assert "/" in targets and "/proc" in targets and not any(t.startswith("/work") for t in targets)
    assert str(scratch) not in out and str(tmp_path) not in out


def test_network_none_has_only_loopback(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh("tail -n +3 /proc/net/dev | cut -d: -f1; ip -o link", network="none"))
    lines = out.splitlines()
    assert code == 0 and [x.strip() for x in lines[:1]] == ["lo"] and len([x for x in lines if "link/" in x]) == 1
    assert "UP" in out or "LOWER_UP" in out


@pytest.mark.parametrize(("argv", "code"), [(("no-such-cmd",), 127), (("/etc/passwd",), 126),
                                            (("/no/such/path",), 127)])
def test_not_found_and_not_executable(lowers: list[Path], scratch: Path, argv: tuple[str, ...], code: int) -> None:
    result = run_step(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=argv))
    assert result.exit_code == code and result.error is not None
    assert argv[0].encode() in result.output_tail


def test_signals_are_forwarded(lowers: list[Path], scratch: Path) -> None:
    spec = sh('trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.05; done')
    r, w = os.pipe()
    started = launch(lowers, scratch / "upper", scratch / "work", spec, stdout=w, stderr=w)
    os.close(w)
    with os.fdopen(r, "rb") as out:
        assert out.readline() == b"ready\n"
        started.helper.send_signal(signal.SIGTERM)
        assert started.wait() == 7
        assert out.read() == b"got TERM\n"
    started.release()


def test_killed_by_signal_is_128_plus(lowers: list[Path], scratch: Path) -> None:
    # PID 1 ignores signals it has no handler for, except SIGKILL from outside its namespace.
    started = launch(lowers, scratch / "upper", scratch / "work", ProcessSpec(argv=("sleep", "30")))
    os.kill(started.pid, signal.SIGTERM)
    os.kill(started.pid, signal.SIGKILL)
    assert started.wait() == 137
    started.release()
    code, out = run(lowers, scratch, sh('sh -c "kill -9 \\$\\$"; echo $?'))
    assert code == 0 and out.endswith("137\n")


def test_deletions_become_whiteouts(lowers: list[Path], scratch: Path) -> None:
    code, _ = run(lowers, scratch, sh("rm /bin/ls && rm -r /home && mkdir /home && echo x > /home/new && chmod 700 /etc/passwd"))
    assert code == 0
    upper = scratch / "upper"
    st = os.lstat(upper / "bin" / "ls")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    names = layer_names(scratch)
    assert "bin/.wh.ls" in names and "home/new" in names
    assert "home/.wh..wh..opq" in names or "home/.wh.app" in names  # either hides the old /home/app
    assert "etc/passwd" in names


def test_sandbox_mounts_leave_nothing_in_upper(lowers: list[Path], scratch: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "token").write_text("s3cret")
    mounts = (BindMount(shared, "/mnt/shared", readonly=False), BindMount(shared, "/srv/ro"),
              TmpfsMount("/scratch", size=1 << 20), SecretMount("token", tmp_path / "token"),
              SecretMount("other", tmp_path / "token", target="/var/run/other"))
    script = ("echo hi > /mnt/shared/out; cat /run/secrets/token; echo; cat /run/other; echo;"
              " touch /srv/ro/x 2>/dev/null || echo RO; echo t > /scratch/f; ls -ld /etc | cut -c1-10")
    code, out = run(lowers, scratch, sh(script, mounts=mounts))
    assert code == 0
    assert out.split() == ["s3cret", "s3cret", "RO", "drwxr-xr-x"]
    assert (shared / "out").read_text() == "hi\n"
    assert upper_entries(scratch) == set()  # no /proc, /dev, /etc/hosts, /mnt, /run, /scratch stubs
    assert not (scratch / "work" / "stubs").exists()


def test_resolv_and_hosts_are_provided(lowers: list[Path], scratch: Path) -> None:
    code, out = run(lowers, scratch, sh("cat /etc/hosts /etc/hostname; echo ok >> /etc/hosts", hostname="box"))
    assert code == 0 and "localhost" in out and "box\n" in out
    assert upper_entries(scratch) == set()


@pytest.mark.parametrize("how", ["param", "env"])
def test_copy_fallback(lowers: list[Path], scratch: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kw: dict[str, object] = {}
    if how == "param":
        kw["rootfs"] = "copy"
    else:
        monkeypatch.setenv("LAYERBUILD_ROOTFS", "copy")
    script = "grep ' / ' /proc/self/mounts | cut -d' ' -f3; rm /bin/ls; rm -r /home/app; echo x > /tmp/f; chmod 600 /etc/group"
    code, out = run(lowers, scratch, sh(script, mounts=(TmpfsMount("/scratch"),)), **kw)
    assert code == 0 and "overlay" not in out
    names = layer_names(scratch)
    assert {"bin/.wh.ls", "home/.wh.app", "tmp/f", "etc/group"} <= set(names)
    assert not {"proc", "dev", "scratch", "etc/hosts"} & set(names)
    assert stat.S_IMODE(os.lstat(scratch / "upper" / "etc" / "group").st_mode) == 0o600


def test_auto_falls_back_to_copy_when_overlay_fails(
    lowers: list[Path], scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox_mod, "_overlay_broken", False)
    # An upper dir on another filesystem than the work dir: overlayfs refuses to mount.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(scratch).st_dev:
        pytest.skip("needs /dev/shm on another filesystem")
    upper = Path(subprocess.check_output(["mktemp", "-d", "-p", "/dev/shm"], text=True).strip())
    try:
        result = run_step(lowers, upper, scratch / "work", sh("rm /bin/ls; echo ok"))
        assert result.exit_code == 0 and result.output_tail == b"ok\n"
        assert stat.S_ISCHR(os.lstat(upper / "bin" / "ls").st_mode)
        assert sandbox_mod._overlay_broken
    finally:
        subprocess.run(["rm", "-rf", str(upper)], check=False)
        monkeypatch.setattr(sandbox_mod, "_overlay_broken", False)


def _helpers_of_ours() -> list[int]:
    """Our child processes that run nsinit."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{os.getpid()}\n" in status and b"nsinit" in cmdline:
            found.append(int(entry))
    return found


def test_a_helper_started_ahead_runs_the_launch_it_is_given(lowers: list[Path], scratch: Path) -> None:
    helper = sandbox_mod.prestart(stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started = launch(lowers, scratch / "upper", scratch / "work", sh("echo $$ ahead; exit 5"),
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, helper=helper)
    assert started.helper is helper.proc and helper.used
    assert started.helper.stdout is not None
    assert started.helper.stdout.read() == b"1 ahead\n"
    assert started.wait() == 5
    started.release()
    helper.discard()  # taken by launch: nothing to do
    assert not _helpers_of_ours()


def test_a_helper_started_ahead_and_not_used_ends_quietly(lowers: list[Path], scratch: Path) -> None:
    helper = sandbox_mod.prestart(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    helper.discard()
    assert helper.proc.returncode == 0
    assert helper.proc.stdout is not None and helper.proc.stderr is not None
    assert helper.proc.stdout.read() == b"" and helper.proc.stderr.read() == b""  # no traceback
    # One started for other stdio than the launch's is discarded there, and the launch runs anyway.
    helper = sandbox_mod.prestart(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = launch(lowers, scratch / "upper", scratch / "work", sh("exit 0"), helper=helper)
    assert started.helper is not helper.proc and helper.proc.returncode == 0
    assert started.wait() == 0
    started.release()
    # A launch that fails before the helper has its spec ends it too.
    helper = sandbox_mod.prestart()
    with pytest.raises(SandboxError, match="unable to find user"):
        launch(lowers, scratch / "upper", scratch / "work", sh("true", user="nobody-here"), helper=helper)
    assert helper.proc.returncode == 0
    assert not _helpers_of_ours()
