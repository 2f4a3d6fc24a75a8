"""The wire format of `layerbuild serve --stdio`: JSON lines, each optionally followed by a binary payload.

A frame is one line of JSON (an object with a type `t`), then, if the object has `size`, exactly that many
bytes of payload. Both sides start with a `hello` naming the protocol and layerbuild versions; frames of
types a side does not know are errors, so a change of meaning is a new PROTOCOL number.
"""

from __future__ import annotations

import json
import threading
from typing import Any, BinaryIO

from layerbuild.errors import LayerbuildError

PROTOCOL = 1
_MAX_LINE = 1 << 20
CHUNK = 1 << 20


class ProtocolError(LayerbuildError):
    """The other side said something this protocol does not allow, or went away."""


class ConnectionClosed(ProtocolError):
    """The stream ended (the other side exited or the connection dropped)."""


class FrameWriter:
    """Writes frames to a binary stream; thread-safe (output of several threads interleaves by frame)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.sent_bytes = 0

    def send(self, kind: str, payload: bytes | None = None, **fields: Any) -> None:
        header = {"t": kind, **fields}
        if payload is not None:
            header["size"] = len(payload)
        line = json.dumps(header, separators=(",", ":")).encode() + b"\n"
        with self.lock:
            self.stream.write(line)
            if payload:
                self.stream.write(payload)
            self.stream.flush()
            self.sent_bytes += len(line) + (len(payload) if payload else 0)


class FrameReader:
    """Reads frames from a binary stream (one reader thread at a time)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def recv(self) -> tuple[dict[str, Any], bytes]:
        """The next frame's header and payload; ConnectionClosed at the end of the stream."""
        line = self.stream.readline(_MAX_LINE)
        if not line:
            raise ConnectionClosed("the connection closed")
        if not line.endswith(b"\n"):
            raise ProtocolError("a frame header is cut short or too long")
        try:
            header = json.loads(line)
        except ValueError:
            raise ProtocolError(f"not a protocol frame: {line[:80]!r}") from None
        if not isinstance(header, dict) or not isinstance(header.get("t"), str):
            raise ProtocolError(f"not a protocol frame: {line[:80]!r}")
        size = header.get("size")
        if size is None:
            return header, b""
        if not isinstance(size, int) or size < 0:
            raise ProtocolError(f"bad payload size in {line[:80]!r}")
        payload = self._read_exact(size)
        return header, payload

    def _read_exact(self, size: int) -> bytes:
        parts: list[bytes] = []
        left = size
        while left:
            chunk = self.stream.read(min(left, CHUNK))
            if not chunk:
                raise ConnectionClosed("the connection closed in the middle of a frame")
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def expect(self, kind: str) -> tuple[dict[str, Any], bytes]:
        """The next frame, which must be of type `kind` (an `error` frame is raised as the error it reports)."""
        header, payload = self.recv()
        if header["t"] == "error":
            raise remote_error(header)
        if header["t"] != kind:
            raise ProtocolError(f"expected a {kind!r} frame, got {header['t']!r}")
        return header, payload


class RemoteError(LayerbuildError):
    """An error the host reported, with its exit code."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


def remote_error(header: dict[str, Any]) -> RemoteError:
    return RemoteError(str(header.get("message", "the host failed")), hint=header.get("hint"),
                       exit_code=int(header.get("code", 1)))


def parse_version(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def check_hello(mine: str, theirs: dict[str, Any], host: str, machine: str | None) -> None:
    """Refuse a host whose protocol or layerbuild version differs from ours, saying which side to upgrade."""
    their_version = str(theirs.get("version", "?"))
    their_protocol = theirs.get("protocol")
    if their_version == mine and their_protocol == PROTOCOL:
        return
    upgrade_host = (f"run `layerbuild machine upgrade {machine}`" if machine
                    else f"install layerbuild {mine} on {host} (or `layerbuild machine create NAME --ssh {host}`)")
    if parse_version(their_version) < parse_version(mine) or (
            their_version == mine and isinstance(their_protocol, int) and their_protocol < PROTOCOL):
        raise RemoteError(f"{host} runs layerbuild {their_version}, older than this client's {mine}",
                          hint=f"upgrade the host: {upgrade_host}", exit_code=1)
    raise RemoteError(f"{host} runs layerbuild {their_version}, newer than this client's {mine}",
                      hint=f"upgrade layerbuild here to {their_version} (or install {mine} on the host: "
                           f"{upgrade_host})", exit_code=1)
