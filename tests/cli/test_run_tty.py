"""`run -t` / `run -it`: the container's own pty, driven from a real terminal (tmux) as a user would."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from layerbuild.runtime import containers
from layerbuild.runtime.containers import ContainerNotFoundError
from tests.cli.kit import busybox_root
from tests.conftest import REPO
from tests.runtime.conftest import busybox_tar
from tests.runtime.rootless import USER, as_user, python_for_user, rootless_home, with_usable_tun  # noqa: F401

pytestmark = pytest.mark.integration

# Generous: only a broken relay waits this long; a working one answers in well under a second.
PATIENCE = 20.0


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with busybox_root("lb-cli-tty-",
                      skip_rootless="runs as root (the rootless test below switches to an unprivileged user itself)") as root:
        yield root


class Pane:
    """A tmux session on its own server (unique socket, no config), running a plain host shell."""

    def __init__(self, width: int = 100, height: int = 30) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (scripts/setup --test installs it)")
        self.server = f"lb-tty-{uuid.uuid4().hex[:12]}"
        self.session = "t"
        env = "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=xterm HOME=/ LAYERBUILD_DAEMON=0 'PS1=host$ ' sh"
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), "-c", str(REPO), env)
        self.socket = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())
        self.wait_for(r"host\$ $")

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.server, "-f", "/dev/null", *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def line(self, text: str) -> None:
        self.send("-l", text)
        self.send("Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", self.session)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first match of `pattern` (multi-line) on the screen, once it appears."""
        deadline = time.monotonic() + PATIENCE
        while True:
            text = self.screen().rstrip("\n")
            found = re.search(pattern, text, re.MULTILINE)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never appeared; the screen:\n{text}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True, timeout=30)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def pane() -> Iterator[Pane]:
    p = Pane()
    try:
        yield p
    finally:
        p.close()


def layerbuild(root: Path, *argv: str) -> str:
    """A shell command line that runs layerbuild with this interpreter."""
    return shlex.join([sys.executable, "-m", "layerbuild", "--root", str(root), *argv])


def assert_terminal_restored(pane: Pane) -> None:
    pane.wait_for(r"^host\$ \Z")  # the host shell's prompt, last on the screen: `run` has ended
    pane.line("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | sort | tr '\\n' ' '; echo :mo''des")
    modes = pane.wait_for(r"^(.*):modes$").group(1).split()  # the quotes keep the command line itself out
    assert modes == ["echo", "icanon"]


def test_interactive_shell(root: Path, pane: Pane, capfd: pytest.CaptureFixture[str]) -> None:
    name = f"tty-{uuid.uuid4().hex[:8]}"
    pane.line(layerbuild(root, "run", "-it", "--name", name, "busybox", "sh") + "; echo rc=$?")
    pane.wait_for(r"^/ # $")
    pane.line("tty; [ /dev/console -ef \"$(tty)\" ] && echo console-too")
    pane.wait_for(r"^/dev/pts/\d+$")
    pane.wait_for(r"^console-too$")
    pane.line("stty size; echo :size1")
    assert pane.wait_for(r"^(\d+ \d+)\n:size1$").group(1) == "30 100"
    pane.tmux("resize-window", "-t", pane.session, "-x", "80", "-y", "20")
    pane.line("stty size; echo :size2")
    assert pane.wait_for(r"^(\d+ \d+)\n:size2$").group(1) == "20 80"
    # Ctrl-C goes through the pty's line discipline to the foreground job; the shell stays.
    pane.line("sleep 100; echo slept=$?")
    pane.wait_for(r"^/ # sleep 100; echo slept=\$\?$")
    pane.send("C-c")
    pane.wait_for(r"^\^C")
    pane.line("echo still-here")
    pane.wait_for(r"^still-here$")
    assert not re.search(r"^slept=", pane.screen(), re.MULTILINE)  # the whole line was interrupted
    pane.line("exit 3")
    pane.wait_for(r"^rc=3$")
    assert_terminal_restored(pane)
    capfd.readouterr()
    assert main(["--root", str(root), "logs", name]) == 0
    log = capfd.readouterr().out
    assert "still-here\r\n" in log and "/dev/pts/" in log  # the log has the terminal's output
    assert main(["--root", str(root), "rm", name]) == 0


IMPORT = """
import sys
from layerbuild.image import import_rootfs
from layerbuild.store import Store
with Store.open(sys.argv[1]) as store, open(sys.argv[2], "rb") as f:
    import_rootfs(store, f, "busybox")
"""


def test_interactive_shell_rootless(pane: Pane, rootless_home: Path) -> None:  # noqa: F811
    """An unprivileged user's `run -it`: the pty comes from the devpts of the user's namespaces."""
    (rootless_home / "busybox.tar").write_bytes(busybox_tar())
    (rootless_home / "import.py").write_text(IMPORT)
    python, env = python_for_user(rootless_home)
    store = rootless_home / f"tty-{uuid.uuid4().hex[:8]}"
    done = as_user([python, str(rootless_home / "import.py"), str(store), str(rootless_home / "busybox.tar")], env)
    assert done.returncode == 0, done.stderr
    user = ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--reset-env", "env",
            *(f"{k}={v}" for k, v in env.items()), python, "-m", "layerbuild", "--root", str(store)]
    pane.line(shlex.join(with_usable_tun([*user, "run", "--rm", "-it", "busybox", "sh"])) + "; echo rc=$?")
    pane.wait_for(r"^/ # $")
    pane.line("tty; id -u; stty size; echo :size1")
    assert pane.wait_for(r"^(/dev/pts/\d+\n0\n\d+ \d+)\n:size1$").group(1).split("\n")[2] == "30 100"
    pane.tmux("resize-window", "-t", pane.session, "-x", "70", "-y", "20")
    pane.line("stty size; echo :size2")
    assert pane.wait_for(r"^(\d+ \d+)\n:size2$").group(1) == "20 70"
    pane.line("sleep 100")
    pane.wait_for(r"^/ # sleep 100$")
    pane.send("C-c")
    pane.line("echo still-here")
    pane.wait_for(r"^still-here$")
    pane.line("exit 5")
    pane.wait_for(r"^rc=5$")
    assert_terminal_restored(pane)


def test_without_tty_the_callers_terminal_is_not_the_containers(root: Path, pane: Pane) -> None:
    """Without -t the container may write to the caller's terminal (its stdout) but not own it: no
    /dev/tty, no controlling terminal (TIOCSTI needs one), and with -i it reads the typed lines
    (a process of the caller's session outside the foreground would be stopped by SIGTTIN)."""
    script = "cut -d' ' -f6,7 /proc/self/stat; true 2>/dev/null </dev/tty && echo has-tty || echo no-tty"
    pane.line(layerbuild(root, "run", "--rm", "busybox", "sh", "-c", script) + "; echo rc=$?")
    pane.wait_for(r"^1 0\nno-tty\nrc=0$")
    pane.line(layerbuild(root, "run", "--rm", "-i", "busybox", "sh", "-c", "read line; echo got=$line"))
    pane.line("typed")
    pane.wait_for(r"^got=typed\nhost\$ $")
    pane.line(layerbuild(root, "run", "--rm", "busybox", "sh", "-c", "stty -echo -icanon </proc/self/fd/1; echo changed"))
    pane.wait_for(r"^changed$")
    assert_terminal_restored(pane)  # the modes it changed through its stdout are back


def describe(*pids: int | None) -> str:
    """What the processes are doing (for a failure message)."""
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except (OSError, TypeError):
            state, wchan = "gone", ""
        out.append(f"{pid}: {state} {wchan}")
    return "; ".join(out)


def test_terminal_closed_ends_the_shell(root: Path) -> None:
    """The caller's terminal going away (a closed ssh session) hangs up the container's: `sh` ends."""
    pane = Pane()
    name = f"tty-{uuid.uuid4().hex[:8]}"
    try:
        pane.line(layerbuild(root, "run", "-it", "--name", name, "busybox", "sh"))
        pane.wait_for(r"^/ # $")
    finally:
        pane.close()
    c = containers.find(root, name)
    deadline = time.monotonic() + PATIENCE
    while not c.exit_path.exists():
        assert time.monotonic() < deadline, f"the container outlived its terminal: {describe(c.pid, c.helper_pid)}"
        time.sleep(0.05)
    assert main(["--root", str(root), "rm", name]) == 0


def test_tty_without_interactive_in_a_terminal(root: Path, pane: Pane) -> None:
    """`-t` alone: the output comes through the container's pty, the caller's terminal stays as it is
    (not raw), so Ctrl-C there interrupts `run`, which passes SIGINT on to the container."""
    script = 'trap "echo got-int; exit 9" INT; stty size; echo waiting; while :; do sleep 0.05; done'
    pane.line(layerbuild(root, "run", "--rm", "-t", "busybox", "sh", "-c", script) + "; echo rc=$?")
    pane.wait_for(r"^30 100\nwaiting$")
    pane.send("C-c")
    pane.wait_for(r"got-int$")  # after the ^C the outer terminal echoes
    pane.wait_for(r"^rc=9$")
    assert_terminal_restored(pane)


def test_failed_exec_restores_the_terminal(root: Path, pane: Pane) -> None:
    pane.line(layerbuild(root, "run", "--rm", "-it", "busybox", "no-such-command") + "; echo rc=$?")
    pane.wait_for(r"executable file not found")
    pane.wait_for(r"^rc=127$")
    assert_terminal_restored(pane)


def test_signal_to_the_cli_is_forwarded_and_the_terminal_restored(root: Path, pane: Pane) -> None:
    name = f"tty-{uuid.uuid4().hex[:8]}"
    script = 'trap "echo got-term; exit 7" TERM; echo waiting; while :; do sleep 0.05; done'
    pane.line(layerbuild(root, "run", "--rm", "-it", "--name", name, "busybox", "sh", "-c", script)
              + "; echo rc=$?")
    pane.wait_for(r"^waiting$")
    c = containers.find(root, name)
    cli = int(Path(f"/proc/{c.helper_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(cli, signal.SIGTERM)
    pane.wait_for(r"^got-term$")
    pane.wait_for(r"^rc=7$")
    assert_terminal_restored(pane)
    with pytest.raises(ContainerNotFoundError):  # --rm removed it
        containers.find(root, name)


def test_tty_without_a_terminal(root: Path) -> None:
    """`-t` alone needs no terminal: output comes through the pty (CRLF), and the log gets it."""
    name = f"tty-{uuid.uuid4().hex[:8]}"
    out = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root), "run", "-t", "--name", name,
                          "busybox", "sh", "-c", "tty; test -t 1 && echo terminal; exit 4"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert out.returncode == 4
    assert re.fullmatch(rb"/dev/pts/\d+\r\nterminal\r\n", out.stdout), out
    c = containers.find(root, name)
    assert c.log_path.read_bytes() == out.stdout
    assert main(["--root", str(root), "rm", name]) == 0


def test_term_is_set_with_a_tty(root: Path) -> None:
    base = [sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm"]
    script = ["busybox", "sh", "-c", 'echo "TERM=${TERM-unset}"']
    runs = {flags: subprocess.run([*base, *flags, *script], stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=60).stdout for flags in [("-t",), ("-t", "-e", "TERM=vt100"), ()]}
    assert runs == {("-t",): b"TERM=xterm\r\n", ("-t", "-e", "TERM=vt100"): b"TERM=vt100\r\n", (): b"TERM=unset\n"}


def test_interactive_without_tty_pipes_stdin(root: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "-i",
                          "busybox", "sh", "-c", "test -t 0 || echo not-a-terminal; cat"],
                         input=b"piped\n", capture_output=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, b"not-a-terminal\npiped\n")


def test_tty_refusal(root: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "-it",
                          "busybox", "sh"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert out.returncode == 125 and "the input device is not a TTY" in out.stderr and "hint:" in out.stderr
    assert "Traceback" not in out.stderr


def test_tty_as_another_user(root: Path) -> None:
    """The terminal belongs to the container's user, who can reopen it as /dev/tty."""
    out = subprocess.run([sys.executable, "-m", "layerbuild", "--root", str(root), "run", "--rm", "-t",
                          "-u", "app", "busybox", "sh", "-c", "id -u; stat -c %u $(tty); echo via-dev-tty > /dev/tty"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, b"1000\r\n1000\r\nvia-dev-tty\r\n")


def test_detached_tty(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`run -d -t`: the helper keeps the terminal, so `sh` waits for input as with `docker run -dit`,
    and the log gets the terminal's output."""
    lb = ["--root", str(root)]
    name = f"tty-{uuid.uuid4().hex[:8]}"
    assert main([*lb, "run", "-d", "-t", "--name", name, "busybox", "sh", "-c", "tty; echo done; exit 6"]) == 0
    c = containers.find(root, name)
    deadline = time.monotonic() + PATIENCE
    while not c.exit_path.exists():  # the helper records the exit code once the container ended
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert c.exit_path.read_text().strip() == "6"
    assert re.fullmatch(rb"/dev/pts/\d+\r\ndone\r\n", c.log_path.read_bytes())
    assert main([*lb, "rm", name]) == 0
    name = f"tty-{uuid.uuid4().hex[:8]}"
    assert main([*lb, "run", "-dit", "--name", name, "busybox", "sh"]) == 0
    c = containers.find(root, name)
    deadline = time.monotonic() + PATIENCE
    while b"/ # " not in c.log_path.read_bytes():  # the prompt: the shell waits on its terminal
        assert time.monotonic() < deadline and c.running()
        time.sleep(0.02)
    assert c.running()
    assert main([*lb, "stop", "-t", "0.2", name]) == 0
    assert main([*lb, "rm", name]) == 0
    capfd.readouterr()


def test_closed_output_hangs_up_the_terminal(root: Path) -> None:
    """Like a terminal that goes away: once nothing reads `run -t`'s output, the container's terminal
    hangs up, so an endless writer ends instead of filling the log forever."""
    name = f"tty-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, "-m", "layerbuild", "--root", str(root), "run", "-t", "--name", name,
                             "busybox", "yes"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"y\r\n"
    proc.stdout.close()
    assert proc.wait(timeout=60) != 0  # the hang-up's SIGHUP (or EIO) ends `yes`
    assert not containers.find(root, name).running()
    assert main(["--root", str(root), "rm", name]) == 0
