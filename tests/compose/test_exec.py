"""`compose exec` (and `layerbuild exec`) under the container's own confinement: the same cgroup,
seccomp filter, capability bounding set, no_new_privs, user, working directory and environment as the
container's process; a pty when stdout is a terminal (driven from tmux), none with -T; and docker
compose's exit codes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.cli.test_run_tty import Pane, layerbuild
from tests.compose.test_up import IMAGE, Project

pytestmark = [pytest.mark.integration]

SERVICE = f"""\
  app:
    image: {IMAGE}
    command: ["sleep", "120"]
    user: "65534:65534"
    working_dir: /www
    environment: {{FOO: bar}}
    stop_grace_period: 1s
"""
PROBE = ("for p in 1 self; do grep -E '^(Seccomp|CapBnd|CapEff|NoNewPrivs|Uid|Gid|Groups):' /proc/$p/status; "
         "cat /proc/$p/cgroup; echo ---; done")


@pytest.mark.slow
def test_exec_runs_confined_as_the_container(project: Project) -> None:
    project.write(SERVICE)
    code, _, err = project("up", "-d")
    assert code == 0, err
    code, out, err = project("exec", "app", "sh", "-c", PROBE)
    assert code == 0, err
    pid1, mine, _ = out.split("---\n")
    assert pid1 == mine  # the container's process and the exec'd one: the same confinement
    assert "Seccomp:\t2" in mine and "Uid:\t65534\t65534\t65534\t65534" in mine and "NoNewPrivs:\t1" in mine
    assert "CapEff:\t0000000000000000" in mine  # as its user: no effective capabilities
    code, out, _ = project("exec", "app", "sh", "-c", "pwd; echo $FOO $HOME; [ -t 1 ] && echo tty || echo notty")
    assert out.split("\n") == ["/www", "bar /", "notty", ""]  # stdout is no terminal here: no pty
    code, out, _ = project("exec", "-u", "0", "-w", "/", "-e", "FOO=baz", "app", "sh", "-c", "id -u; pwd; echo $FOO")
    assert code == 0 and out.split() == ["0", "/", "baz"]
    # exit codes as docker compose's: the command's own, 127 not found, 126 not executable
    assert project("exec", "app", "sh", "-c", "exit 5")[0] == 5
    code, _, err = project("exec", "app", "nosuchcommand")
    assert code == 127 and "executable file not found" in err
    assert project("exec", "app", "/www")[0] == 126
    code, _, err = project("exec", "-w", "/nowhere", "app", "true")
    assert code == 126 and "/nowhere" in err
    # a process started by exec belongs to the container: stop takes it along
    code, _, err = project("exec", "app", "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
    assert code == 0, err
    assert project("stop", "-t", "1")[0] == 0
    assert project("ps", "-a", "--json")[0] == 0


@pytest.mark.slow
def test_exec_gets_a_pty_on_a_terminal_and_none_with_T(project: Project) -> None:
    project.write(SERVICE)
    assert project("up", "-d")[0] == 0
    compose = ["compose", "-f", str(project.dir / "compose.yaml")]
    pane = Pane()
    try:
        pane.line(layerbuild(project.root, *compose, "exec", "app", "sh") + "; echo rc=$?")
        pane.wait_for(r"^/www \$ $")
        pane.line("[ -t 0 ] && [ -t 1 ] && echo on-a-tty; tty; stty size; echo :size")
        pane.wait_for(r"^on-a-tty$")
        assert pane.wait_for(r"^(\d+ \d+)\n:size$").group(1) == "30 100"
        pane.line("exit 3")
        pane.wait_for(r"^rc=3$")
        marker = uuid.uuid4().hex[:8]
        pane.line(layerbuild(project.root, *compose, "exec", "-T", "app", "sh", "-c",
                             f"[ -t 1 ] && echo tty-{marker} || echo notty-{marker}") + "; echo rc2=$?")
        pane.wait_for(rf"^notty-{marker}$")
        pane.wait_for(r"^rc2=0$")
        pane.line("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | sort | tr '\\n' ' '; "
                  "echo :mo''des")
        assert pane.wait_for(r"^(.*):modes$").group(1).split() == ["echo", "icanon"]  # the terminal restored
    finally:
        pane.close()


def test_layerbuild_exec_t(project: Project, tmp_path: Path) -> None:
    """`layerbuild exec -t` without a terminal on our side still gives the process a pty."""
    project.write(SERVICE)
    assert project("up", "-d")[0] == 0
    from layerbuild.cli.main import main

    project.capfd.readouterr()
    code = main(["--root", str(project.root), "exec", "-t", f"{project.name}-app-1", "sh", "-c",
                 "[ -t 1 ] && echo tty; exit 4"])
    out, _ = project.capfd.readouterr()
    assert code == 4 and out.replace("\r", "") == "tty\n"


def test_a_timed_out_exec_leaves_no_process(project: Project) -> None:
    """A healthcheck's timeout kills the command itself, not only its helper outside the container."""
    from layerbuild.runtime import containers
    from layerbuild.runtime.enter import exec_in

    project.write(SERVICE)
    assert project("up", "-d")[0] == 0
    c = containers.find(project.root, f"{project.name}-app-1")
    marker = str(1000 + uuid.uuid4().int % 9000)  # sleep's argument tells this one apart
    assert exec_in(c, ["sleep", marker], timeout=0.5) == 124
    code, out, _ = project("exec", "app", "ps", "-o", "args")
    assert code == 0 and marker not in out
