"""The registry's HTTP/1.1 connections: an httpx transport on the standard library's `http.client`.

httpx stays the client (requests, redirects, auth flows, proxies from the environment, errors); this is
only what carries a request to a registry reached directly and brings its answer back. A blob then
streams by large `recv`s straight from the socket, without the GIL held between them: httpcore's h11
parser copies every chunk through its receive buffer in Python, which on two cores made a pull's
layer downloads wait on one another (measured on 264 MB of gzip layers over loopback: httpcore with
1 MiB reads 0.55 s, `http.client` 0.2 s, in one process).

Connections are kept per origin and reused when an answer was read to its end; one that the peer
closed meanwhile is noticed before it is used (a request is never sent twice here: what failed is the
caller's to retry, by its own rules). Failures are httpx's exceptions (`ConnectError`,
`ReadError`, `RemoteProtocolError`, the timeouts), with the socket's error as their cause, so the
retry rules and error texts apply as before.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator

import httpx

READ_BYTES = 1 << 20  # the most one read of a body asks the socket for
_IDLE_PER_ORIGIN = 8


class _Conn:
    """One connection (a holder, so that a body can let go of it exactly once)."""

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn


def _stale(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the peer (or has bytes nobody asked for)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None, float | None]:
    t = request.extensions.get("timeout") or {}
    return t.get("connect"), t.get("read"), t.get("write")


class _Body(httpx.SyncByteStream):
    """An answer's body as it arrives; the connection goes back to its pool once it is read to its end."""

    def __init__(self, transport: WireTransport, key: tuple[str, str, int], holder: _Conn | None,
                 resp: http.client.HTTPResponse) -> None:
        self._transport = transport
        self._key = key
        self._holder = holder
        self._resp = resp
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        resp = self._resp
        try:
            while True:
                left = resp.length  # None: chunked, or until the connection closes
                chunk = resp.read1(READ_BYTES)
                if not chunk:
                    if left:
                        raise httpx.RemoteProtocolError(
                            f"peer closed connection without sending complete message body "
                            f"({left} bytes left)")
                    break
                yield chunk
        except http.client.IncompleteRead as exc:
            raise httpx.RemoteProtocolError(f"peer closed connection without sending complete message body "
                                            f"({exc.expected} bytes left)") from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out") from exc
        except (http.client.HTTPException, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        self._done = True
        self._release()

    def _release(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        if self._done and not self._resp.will_close:
            self._resp.close()  # read to its end: the connection may carry the next request
            self._transport._give_back(self._key, holder)
        else:
            holder.conn.close()

    def close(self) -> None:
        self._release()


class WireTransport(httpx.BaseTransport):
    """Direct HTTP/1.1 connections with `context` for https (None: plain http only); thread-safe."""

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self._context = context
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._lock = threading.Lock()
        self._closed = False

    # --- the pool ---------------------------------------------------------------------------------

    def _take(self, key: tuple[str, str, int]) -> _Conn | None:
        with self._lock:
            idle = self._idle.get(key)
            while idle:
                holder = idle.pop()
                if not _stale(holder.conn):
                    return holder
                holder.conn.close()
        return None

    def _give_back(self, key: tuple[str, str, int], holder: _Conn) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if self._closed or len(idle) >= _IDLE_PER_ORIGIN:
                holder.conn.close()
            else:
                idle.append(holder)

    def _connect(self, key: tuple[str, str, int], connect_timeout: float | None) -> _Conn:
        scheme, host, port = key
        if scheme == "https":
            if self._context is None:
                raise httpx.ConnectError(f"no TLS settings for https://{host}:{port}")
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=connect_timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        try:
            conn.connect()
        except TimeoutError as exc:
            conn.close()
            raise httpx.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:  # refused, unreachable, a bad name, a TLS handshake that failed
            conn.close()
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Conn(conn)

    # --- a request --------------------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the URL {url} is neither http nor https")
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        connect_timeout, read_timeout, write_timeout = _timeouts(request)
        holder = self._take(key) or self._connect(key, connect_timeout)
        try:
            resp = self._exchange(holder.conn, request, read_timeout, write_timeout)
        except BaseException:
            holder.conn.close()
            raise
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in resp.getheaders()]
        stream = _Body(self, key, holder, resp)
        return httpx.Response(resp.status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1",
                                          "reason_phrase": (resp.reason or "").encode("latin-1")})

    @staticmethod
    def _exchange(conn: http.client.HTTPConnection, request: httpx.Request, read_timeout: float | None,
                  write_timeout: float | None) -> http.client.HTTPResponse:
        sock = conn.sock
        assert sock is not None
        target = request.url.raw_path.decode("ascii")
        chunked = False
        try:
            sock.settimeout(write_timeout)
            conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.raw:
                if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                    chunked = True
                conn.putheader(name, value)
            conn.endheaders()
            for part in request.stream:  # type: ignore[union-attr]
                if not part:
                    continue
                if chunked:
                    conn.send(b"%x\r\n" % len(part) + bytes(part) + b"\r\n")
                else:
                    conn.send(part)
            if chunked:
                conn.send(b"0\r\n\r\n")
            sock.settimeout(read_timeout)
            return conn.getresponse()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc) or "timed out") from exc
        except http.client.RemoteDisconnected as exc:
            raise httpx.RemoteProtocolError("server disconnected without sending a response") from exc
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [h for hs in self._idle.values() for h in hs]
            self._idle.clear()
        for holder in idle:
            holder.conn.close()
