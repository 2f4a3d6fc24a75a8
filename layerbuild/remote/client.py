"""The client's side of `serve --stdio`: one SSH session to a host's `layerbuild serve --stdio`, commands
run there with their output streamed here, the build context synchronised, files fetched back."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from layerbuild.remote.frames import (
    CHUNK,
    ConnectionClosed,
    FrameReader,
    FrameWriter,
    ProtocolError,
    check_hello,
    remote_error,
)
from layerbuild.remote.machines import INSTALL_DIR
from layerbuild.remote.ssh import SshError, SshTarget, connection_error, ssh_argv
from layerbuild.remote.sync import Scan, write_tar

# The host's layerbuild: the machine's own installation, else one on the PATH.
SERVE = (f'p="$HOME/{INSTALL_DIR}/venv/bin/layerbuild"; [ -x "$p" ] || p=layerbuild; '
         'exec "$p" serve --stdio')


@dataclass
class Synced:
    dir: str
    files: int
    bytes: int


class _FrameSink(io.RawIOBase):
    """A writable stream sent as `data` frames (the tar of the context's files)."""

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if data:
            self.writer.send("data", data)
        return len(data)


class Connection:
    """A live session with a host; close() says bye and waits for ssh to end."""

    def __init__(self, target: SshTarget, machine: str | None = None, command: str = SERVE) -> None:
        from layerbuild import __version__

        self.target = target
        self.machine = machine
        self.proc = subprocess.Popen(ssh_argv(target, command), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._stderr: list[bytes] = []
        self._stderr_thread = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        self._stderr_thread.start()
        self.writer = FrameWriter(self.proc.stdin)  # type: ignore[arg-type]
        self.reader = FrameReader(self.proc.stdout)  # type: ignore[arg-type]
        self.version = __version__
        self._hello: dict[str, Any] | None = None
        with contextlib.suppress(BrokenPipeError):
            self.writer.send("hello", protocol=1, version=__version__)
        # The host's answer is read on the first request: the caller works (scans the context) meanwhile.

    def ready(self) -> dict[str, Any]:
        """The host's hello (read once), checked against ours: a version mismatch says who to upgrade."""
        if self._hello is not None:
            return self._hello
        try:
            hello, _ = self.reader.recv()
        except (ConnectionClosed, BrokenPipeError, ProtocolError) as exc:
            raise self._failure(exc) from None
        if hello.get("t") != "hello":
            raise self._failure(ProtocolError(f"the host did not greet: {hello}"))
        check_hello(self.version, hello, self.target.url, self.machine)
        self._hello = hello
        return hello

    @property
    def tmp(self) -> str:
        return str(self.ready()["tmp"])

    def _drain(self, stream: IO[bytes]) -> None:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            self._stderr.append(chunk)

    def stderr_text(self) -> str:
        self._stderr_thread.join(timeout=2)
        return b"".join(self._stderr).decode(errors="replace")

    def _failure(self, exc: Exception) -> Exception:
        """Why the session could not start: ssh's reason, or the host's lack of layerbuild."""
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        text = self.stderr_text()
        if code == 255:
            return connection_error(self.target, text)
        if code == 127 or "not found" in text:
            where = f"machine {self.machine}" if self.machine else self.target.url
            return SshError(f"layerbuild is not installed on {where}",
                            hint=f"set the host up with `layerbuild machine create NAME --ssh "
                                 f"{self.target.destination()}`")
        detail = text.strip().splitlines()[-1] if text.strip() else str(exc)
        return SshError(f"the host's `layerbuild serve --stdio` failed: {detail}")

    def _lost(self) -> SshError:
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        text = self.stderr_text().strip()
        last = text.splitlines()[-1] if text else "no reason given"
        return SshError(f"the connection to {self.target.url} was lost ({last})")

    # --- requests ---------------------------------------------------------------------------------------

    def _recv(self) -> tuple[dict[str, Any], bytes]:
        self.ready()
        try:
            header, payload = self.reader.recv()
        except ConnectionClosed:
            raise self._lost() from None
        if header["t"] == "error":
            raise remote_error(header)
        return header, payload

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, tty: bool = False,
            stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None) -> int:
        """Run `layerbuild ARGV...` on the host; its output goes to ours as it comes; its exit code.
        Ctrl-C here cancels it there (a second one gives up on the host)."""
        out = stdout if stdout is not None else sys.stdout.buffer
        err = stderr if stderr is not None else sys.stderr.buffer
        self.ready()
        sys.stdout.flush()
        sys.stderr.flush()
        self.writer.send("run", argv=argv, env=env or {}, tty=tty)
        cancelled = False
        while True:
            try:
                header, payload = self._recv()
                if header["t"] == "out":
                    sink = out if header.get("fd") == 1 else err
                    sink.write(payload)
                    sink.flush()
                elif header["t"] == "exit":
                    return int(header["code"])
                else:
                    raise ProtocolError(f"unexpected {header['t']!r} frame during a command")
            except KeyboardInterrupt:
                if cancelled:
                    self.kill()
                    return 130
                cancelled = True
                with contextlib.suppress(OSError):
                    self.writer.send("cancel")

    def info(self) -> dict[str, Any]:
        self.ready()
        self.writer.send("info")
        header, _ = self._recv()
        return header

    def put(self, name: str, data: bytes | None, context: str | None = None) -> str:
        """Write a small file into this session's directory on the host (or beside the copy of the
        context `context`, where it stays); its path there (relative to the context's copy: `../df/NAME`)."""
        self.ready()
        self.writer.send("put", data, name=name, context=context, delete=data is None)
        return f"../df/{name}" if context else f"{self.tmp}/{name}"

    def sync(self, scan: Scan) -> Synced:
        """Bring the host's copy of the context up to `scan`, sending only the files it lacks."""
        self.ready()
        self.writer.send("sync", id=scan.context_id, digest=scan.digest)
        header, _ = self._recv()
        if header["t"] == "manifest?":
            self.writer.send("manifest", scan.manifest())
            need, _ = self._recv()
            paths = [str(p) for p in need.get("paths", [])]
            if paths:
                sink = io.BufferedWriter(_FrameSink(self.writer), CHUNK)
                write_tar(scan, paths, sink)
                sink.flush()
                self.writer.send("eof")
            header, _ = self._recv()
        if header["t"] != "synced":
            raise ProtocolError(f"unexpected {header['t']!r} frame while sending the context")
        return Synced(str(header["dir"]), int(header["files"]), int(header["bytes"]))

    def fetch(self, path: str, dest: IO[bytes], progress: Callable[[int], None] | None = None) -> bool:
        """Copy a file of this session on the host into `dest`; False if the host has none."""
        self.ready()
        self.writer.send("fetch", path=path)
        header, _ = self._recv()
        if header["t"] == "missing":
            return False
        done = 0
        while True:
            header, payload = self._recv()
            if header["t"] == "eof":
                return True
            dest.write(payload)
            done += len(payload)
            if progress is not None:
                progress(done)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.writer.send("bye")
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        # Not waited for: the host ends the session by itself (its clean-up is no reason to keep the user).

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

