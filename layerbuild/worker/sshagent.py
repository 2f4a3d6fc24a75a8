"""`--ssh` agents of one build, and the socket each `RUN --mount=type=ssh` step gets (BuildKit's sshforward).

An id names an agent socket (`$SSH_AUTH_SOCK` for `--ssh default`) or private key files; for keys a
private OpenSSH `ssh-agent` is started on first use, holding just those keys, and stopped with the
build. A step never sees the agent's own socket: it gets a socket of its own, made in a private
directory, bind-mounted at the mount's target and served by a thread of the build that relays each
connection to the agent. When the step ends the socket is closed and removed and its connections
cut, so nothing the step left behind can reach the agent afterwards. Nothing of this is keyed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from layerbuild.errors import BuildError

_AGENT_START_S = 10.0


_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child after fork only calls into it


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """An agent of a build that is killed goes with it (PR_SET_PDEATHSIG, SIGKILL)."""
    _libc.prctl(1, 9, 0, 0, 0)


def _accepts(path: Path) -> bool:
    """Whether a server listens on the socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class SshAgents:
    """The build's agents by id (`sources`: id → one socket, or key files). Thread-safe; `close` once."""

    def __init__(self, sources: Mapping[str, tuple[Path, ...]]) -> None:
        self.sources = dict(sources)
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._agents: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self._count = 0

    def start(self) -> None:
        """Start an agent for every id given as key files, now, so that a bad key fails the build
        before any step runs (as buildx reads the keys first). Call it from the thread that outlives
        the build's steps: an agent is killed when the thread that started it ends."""
        for ident in self.sources:
            self.upstream(ident)

    def _scratch(self) -> Path:
        """A private directory with a short path (a socket's path must fit in 108 bytes)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="layerbuild-ssh-"))
        return self._dir

    def upstream(self, ident: str) -> Path | None:
        """The agent socket of `ident` (an agent holding its keys is started now), or None if not given."""
        paths = self.sources.get(ident)
        if paths is None:
            return None
        if len(paths) == 1 and paths[0].is_socket():
            return paths[0]
        with self._lock:
            if ident not in self._agents:
                self._agents[ident] = self._start_agent(ident, paths)
            return self._agents[ident][1]

    def _start_agent(self, ident: str, keys: tuple[Path, ...]) -> tuple[subprocess.Popen[bytes], Path]:
        agent, add = shutil.which("ssh-agent"), shutil.which("ssh-add")
        if agent is None or add is None:
            raise BuildError(f"--ssh {ident}: serving key files needs OpenSSH's ssh-agent and ssh-add",
                             hint="install Debian's openssh-client, or give an agent socket (--ssh ID=SOCKET)")
        self._count += 1
        path = self._scratch() / f"agent-{self._count}.sock"
        proc = subprocess.Popen([agent, "-D", "-a", str(path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + _AGENT_START_S
        while not _accepts(path):  # bound is not yet listening: wait until a connection is taken
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.communicate()[1].decode("utf-8", "replace").strip()
                raise BuildError(f"--ssh {ident}: ssh-agent did not start" + (f": {err}" if err else ""))
            time.sleep(0.01)
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "SSH_ASKPASS")}
        env.update(SSH_AUTH_SOCK=str(path), SSH_ASKPASS_REQUIRE="never")
        done = subprocess.run([add, "-q", *map(str, keys)], stdin=subprocess.DEVNULL, capture_output=True,
                              env=env, timeout=30, check=False)
        if done.returncode != 0:
            proc.kill()
            proc.wait()
            err = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
            raise BuildError(f"--ssh {ident}: cannot load the key(s) {', '.join(map(str, keys))}: {err}",
                             hint="give unencrypted private keys, or an agent that holds them (--ssh ID=SOCKET)")
        return proc, path

    def proxy(self, ident: str) -> Proxy | None:
        """A new socket relaying to the agent of `ident` (None if the id was not given); close it."""
        upstream = self.upstream(ident)
        if upstream is None:
            return None
        with self._lock:
            self._count += 1
            path = self._scratch() / f"step-{self._count}.sock"
        return Proxy(path, upstream)

    def close(self) -> None:
        for proc, _ in self._agents.values():
            proc.kill()
            proc.wait()
        self._agents.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class Proxy:
    """A listening socket at `path` whose every connection is relayed to `upstream`, until `close`."""

    def __init__(self, path: Path, upstream: Path) -> None:
        self.path = path
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._server = threading.Thread(target=self._serve, name="ssh-proxy", daemon=True)
        self._server.start()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([self._listener.fileno(), self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                agent.connect(str(self.upstream))
            except OSError:
                conn.close()
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    agent.close()
                    return
                self._open.update((conn, agent))
                for a, b in ((conn, agent), (agent, conn)):
                    thread = threading.Thread(target=self._relay, args=(a, b), name="ssh-relay", daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _relay(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening, remove the socket and cut every connection (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.write(self._wake_w, b"x")
        self._server.join()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        for sock in self._open:
            sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
