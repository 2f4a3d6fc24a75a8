"""`layerbuild serve --stdio`: the host's side of the protocol, one connection per process.

Frames from the client are read by a thread (so a `cancel`, or the connection dropping, is seen while a
command runs) and turn into SIGINT for the main thread, which stops a build exactly as Ctrl-C does at a
terminal. A command runs in this process (no second interpreter start) with its standard output and error
(file descriptors 1 and 2, so its child processes' too) captured by pipes and streamed as `out` frames.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from layerbuild.remote.frames import (
    CHUNK,
    PROTOCOL,
    ConnectionClosed,
    FrameReader,
    FrameWriter,
    ProtocolError,
)

RunCli = Callable[[list[str]], int]
_EOF: dict[str, Any] = {"t": "__eof__"}


class _TtyText(io.TextIOWrapper):
    """A text stream that says it is a terminal: the client's is, and renders what we write."""

    def isatty(self) -> bool:
        return True


class _Frames(io.RawIOBase):
    """The payloads of `data` frames up to an `eof` frame, read as one stream."""

    def __init__(self, inbox: queue.Queue[tuple[dict[str, Any], bytes]]) -> None:
        self.inbox = inbox
        self.buf = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf and not self.done:
            header, payload = self.inbox.get()
            if header["t"] == "data":
                self.buf = payload
            elif header["t"] == "eof":
                self.done = True
            else:
                raise ProtocolError(f"expected data, got {header['t']!r}")
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


class Server:
    def __init__(self, proto_in: IO[bytes], proto_out: IO[bytes], run_cli: RunCli, root: str | None,
                 version: str) -> None:
        self.reader = FrameReader(proto_in)  # type: ignore[arg-type]
        self.writer = FrameWriter(proto_out)  # type: ignore[arg-type]
        self.run_cli = run_cli
        self.root = root
        self.version = version
        self.inbox: queue.Queue[tuple[dict[str, Any], bytes]] = queue.Queue()
        self.running = threading.Event()
        self.closed = threading.Event()
        self.tmp = Path(tempfile.mkdtemp(prefix="layerbuild-serve-"))

    # --- the reader thread ------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                header, payload = self.reader.recv()
                if header["t"] == "cancel":
                    if self.running.is_set():
                        os.kill(os.getpid(), signal.SIGINT)
                    continue
                self.inbox.put((header, payload))
        except (ProtocolError, OSError, ValueError):
            pass
        self.closed.set()
        if self.running.is_set():  # the client went away mid-command: stop it as Ctrl-C would
            os.kill(os.getpid(), signal.SIGINT)
        self.inbox.put((_EOF, b""))

    # --- the main loop ----------------------------------------------------------------------------------

    def serve(self) -> int:
        threading.Thread(target=self._read, daemon=True, name="frames").start()
        try:
            self.writer.send("hello", protocol=PROTOCOL, version=self.version,
                             python=".".join(map(str, sys.version_info[:3])), tmp=str(self.tmp))
            while True:
                try:
                    header, payload = self.inbox.get()
                    kind = header["t"]
                    if kind in ("__eof__", "bye"):
                        return 0
                    handler = getattr(self, "_on_" + kind, None)
                    if kind == "hello":
                        continue
                    if handler is None:
                        self.writer.send("error", message=f"unknown request {kind!r}", code=2)
                        continue
                    handler(header, payload)
                except KeyboardInterrupt:  # a cancel that came between commands
                    continue
                except (BrokenPipeError, ConnectionClosed):
                    return 1
                except Exception as exc:  # report it, keep the connection
                    from layerbuild.errors import LayerbuildError

                    if isinstance(exc, LayerbuildError):
                        self.writer.send("error", message=exc.message, hint=exc.hint, code=exc.exit_code)
                    else:
                        self.writer.send("error", message=f"{type(exc).__name__}: {exc}", code=1)
        except (BrokenPipeError, OSError):
            return 1
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _root_args(self) -> list[str]:
        return ["--root", self.root] if self.root else []

    def _on_run(self, header: dict[str, Any], payload: bytes) -> None:
        argv = [str(a) for a in header["argv"]]
        code = self.run_command(self._root_args() + argv, header.get("env") or {}, bool(header.get("tty")))
        self.writer.send("exit", code=code)

    def run_command(self, argv: list[str], env: dict[str, str], tty: bool) -> int:
        """Run one CLI command here, its fds 1 and 2 streamed to the client as they are written."""
        pipes = [os.pipe(), os.pipe()]
        saved = [os.dup(1), os.dup(2)]
        old_streams = sys.stdout, sys.stderr
        old_env = {k: os.environ.get(k) for k in env}
        pumps = [threading.Thread(target=self._pump, args=(pipes[i][0], i + 1), daemon=True) for i in range(2)]
        for pump in pumps:
            pump.start()
        try:
            for i, (_r, w) in enumerate(pipes):
                os.dup2(w, i + 1)
                os.close(w)
            cls = _TtyText if tty else io.TextIOWrapper
            sys.stdout = cls(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace",
                             line_buffering=True, write_through=True)
            sys.stderr = cls(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                             line_buffering=True, write_through=True)
            os.environ.update({k: str(v) for k, v in env.items()})
            self.running.set()
            if self.closed.is_set():
                return 130
            try:
                return self.run_cli(argv)
            except KeyboardInterrupt:
                return 130
        finally:
            self.running.clear()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            sys.stdout, sys.stderr = old_streams
            for k, v in old_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            for i in range(2):
                os.dup2(saved[i], i + 1)
                os.close(saved[i])
            for pump in pumps:
                pump.join(timeout=3)

    def _pump(self, fd: int, which: int) -> None:
        try:
            while chunk := os.read(fd, CHUNK):
                with contextlib.suppress(OSError):
                    self.writer.send("out", chunk, fd=which)
        finally:
            os.close(fd)

    def _on_info(self, header: dict[str, Any], payload: bytes) -> None:
        from layerbuild.store.layout import resolve_root

        root = resolve_root(self.root)
        size = 0
        if (root / "index.db").exists():
            from layerbuild.store import Store

            with Store.open(root) as store:
                size = store.df().total
        self.writer.send("info", version=self.version, root=str(root), store_size=size)

    def _on_put(self, header: dict[str, Any], payload: bytes) -> None:
        name = str(header["name"])
        if "/" in name or name in ("", ".", ".."):
            raise ProtocolError(f"bad file name {name!r}")
        directory = self.tmp
        if header.get("context"):  # beside the context's copy: the same path every build (its history)
            from layerbuild.remote.sync import Mirror

            directory = Mirror(self._mirrors(), str(header["context"])).dir / "df"
            directory.mkdir(exist_ok=True)
        path = directory / name
        if header.get("delete"):
            path.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError):
            if path.read_bytes() == payload:
                return
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, path)

    def _mirrors(self) -> Path:
        from layerbuild.store.layout import resolve_root

        return resolve_root(self.root) / "remote-contexts"

    def _on_sync(self, header: dict[str, Any], payload: bytes) -> None:
        import json

        from layerbuild.remote.sync import Mirror

        mirror = Mirror(self._mirrors(), str(header["id"]))
        digest = str(header["digest"])
        if mirror.digest == digest:
            self.writer.send("synced", dir=str(mirror.ctx), files=0, bytes=0)
            return
        self.writer.send("manifest?")
        _head, raw = self.reader_expect("manifest")
        items = [tuple(item) for item in json.loads(raw)]
        need = mirror.needed(items)
        self.writer.send("need", paths=need)
        stream = io.BufferedReader(_Frames(self.inbox), CHUNK) if need else None
        mirror.apply(digest, items, stream)
        if stream is not None:
            while stream.read(CHUNK):  # the tar's padding up to the eof frame
                pass
        self.writer.send("synced", dir=str(mirror.ctx), files=len(need),
                         bytes=sum(item[3] for item in items if item[0] in set(need)))

    def reader_expect(self, kind: str) -> tuple[dict[str, Any], bytes]:
        header, payload = self.inbox.get()
        if header["t"] != kind:
            raise ProtocolError(f"expected {kind!r}, got {header['t']!r}")
        return header, payload

    def _on_fetch(self, header: dict[str, Any], payload: bytes) -> None:
        path = Path(str(header["path"])).resolve()
        if self.tmp.resolve() not in path.parents:
            raise ProtocolError("only files of this session can be fetched")
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            self.writer.send("missing")
            return
        with f:
            self.writer.send("file", size_total=os.fstat(f.fileno()).st_size)
            while chunk := f.read(CHUNK):
                self.writer.send("data", chunk)
        self.writer.send("eof")


def serve_stdio(run_cli: RunCli, root: str | None) -> int:
    """Serve the connection on this process's stdin/stdout until the client says bye or goes away."""
    from layerbuild import __version__

    proto_in = os.fdopen(os.dup(0), "rb", buffering=CHUNK)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=CHUNK)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # nothing else may write into the protocol stream, nor read the client's frames
        os.dup2(null, fd)
    os.close(null)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(Exception):
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    return Server(proto_in, proto_out, run_cli, root, __version__).serve()
