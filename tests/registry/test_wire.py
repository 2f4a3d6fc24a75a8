"""The registry's HTTP/1.1 transport (http.client under httpx) against small servers on loopback that
behave well and badly: connections reused only after a whole answer, stale ones noticed, truncated
bodies and timeouts raised as httpx's errors, chunked bodies both ways. (TLS, auth, redirects and the
fault proxy run through it in test_client.py and the pull/push tests.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from layerbuild.registry.wire import WireTransport
from tests.registry.kit import Registry


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[int]
    bodies: list[bytes]

    def log_message(self, *args: object) -> None:
        pass

    def _body_in(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self) -> None:
        self.peers.append(self.client_address[1])
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        size = int(self.path.strip("/") or "5")
        body = bytes(i % 251 for i in range(size))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.peers.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Length", "1234")
        self.end_headers()

    def do_PUT(self) -> None:
        self.peers.append(self.client_address[1])
        self.bodies.append(self._body_in())
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"peers": [], "bodies": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def client() -> httpx.Client:
    return httpx.Client(transport=WireTransport(None), timeout=httpx.Timeout(5.0))


def test_a_connection_is_reused_once_an_answer_is_read_to_its_end(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    with client() as c:
        big = c.get(f"{url}/3000000")
        assert big.content == bytes(i % 251 for i in range(3_000_000))
        assert c.head(f"{url}/x").headers["content-length"] == "1234"
        assert c.get(f"{url}/7").content == bytes(range(7))
    assert len(set(handler.peers)) == 1, handler.peers


def test_an_answer_left_unread_closes_its_connection(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    with client() as c:
        with c.stream("GET", f"{url}/5000000") as resp:
            assert len(next(resp.iter_raw())) > 0  # some of it, not the rest
        assert c.get(f"{url}/3").content == bytes(range(3))
    assert len(set(handler.peers)) == 2


def test_chunked_bodies_both_ways(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    with client() as c:
        assert c.get(f"{url}/chunked").content == b"hello chunked world"

        def parts() -> Iterator[bytes]:
            yield b"first "
            yield b""
            yield memoryview(b"second")  # type: ignore[misc]

        assert c.put(f"{url}/up", content=parts()).status_code == 201
        assert c.post(f"{url}/up", content=b"sized body").status_code == 201
    assert handler.bodies == [b"first second", b"sized body"]
    assert len(set(handler.peers)) == 1


def _raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    got = conn.recv(65536)
                    if not got:
                        break
                    buf += got
                answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@pytest.fixture
def truncating() -> Iterator[str]:
    yield from _raw_server(lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10))


@pytest.fixture
def closing_after_answer() -> Iterator[str]:
    # Says keep-alive, then closes: the next request must notice and use a new connection.
    yield from _raw_server(lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))


@pytest.fixture
def silent() -> Iterator[str]:
    yield from _raw_server(lambda conn: threading.Event().wait(3))


def test_a_truncated_body_is_a_protocol_error(truncating: str) -> None:
    with client() as c, pytest.raises(httpx.RemoteProtocolError, match="90 bytes left"):
        c.get(f"{truncating}/blob")


def test_a_connection_the_peer_closed_is_not_used_again(closing_after_answer: str) -> None:
    with client() as c:
        assert c.get(f"{closing_after_answer}/a").content == b"ok"
        threading.Event().wait(0.1)  # the server has closed its end by now
        assert c.get(f"{closing_after_answer}/b").content == b"ok"


def test_refused_and_silent_peers_are_httpx_errors(silent: str) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with client() as c, pytest.raises(httpx.ConnectError):
        c.get(f"http://127.0.0.1:{port}/")
    with httpx.Client(transport=WireTransport(None), timeout=httpx.Timeout(0.3)) as c, \
            pytest.raises(httpx.ReadTimeout):
        c.get(f"{silent}/")


def test_https_without_tls_settings_is_refused() -> None:
    with client() as c, pytest.raises(httpx.ConnectError, match="no TLS settings"):
        c.get("https://127.0.0.1:9/")


@pytest.mark.parametrize("sizes,reads", [([5, 1, 0, 7], [3, 3, 3, 3, 3]), ([1 << 20], [4, 1 << 20, 10]),
                                         ([2, 2], [-1, -1, -1])])
def test_a_blob_reader_hands_out_every_byte_once(sizes: list[int], reads: list[int]) -> None:
    from layerbuild.registry.images import _ChunkReader

    chunks = [bytes([i]) * n for i, n in enumerate(sizes)]
    whole = b"".join(chunks)
    for use_into in (False, True):
        reader = _ChunkReader(iter(chunks))
        got = b""
        for n in [*reads, -1, -1, -1, -1]:
            if use_into:
                buf = bytearray(n if n >= 0 else 1 << 21)
                k = reader.readinto(buf)
                got += bytes(buf[:k])
            else:
                got += reader.read(n)
        assert got == whole
        assert reader.read(5) == b"" and reader.readinto(bytearray(5)) == 0


def test_one_tls_connection_carries_a_registry_session(tls_registry: Registry,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS (the fixture's CA, htpasswd auth), an upload's requests, a manifest and blobs go over
    the connections kept from one request to the next: one TLS handshake per connection, not one per
    request (a TLS 1.3 ticket that arrives after the handshake must not make a kept one look closed)."""
    from tests.registry.fixtures import client_for
    from tests.registry.test_client import image, ref_of, sha

    made: list[tuple[str, str, int]] = []
    connect = WireTransport._connect

    def counted(self: WireTransport, key: tuple[str, str, int], timeout: float | None) -> object:
        made.append(key)
        return connect(self, key, timeout)

    monkeypatch.setattr(WireTransport, "_connect", counted)
    config, layer, _ = image()
    with client_for(tls_registry) as client:
        ref = ref_of(tls_registry.host, "wire/kept:1")
        for data in (layer, config):
            client.upload_blob(ref, sha(data), len(data), data)
        for _ in range(5):
            assert client.get_blob(ref, sha(layer)) == layer
            assert client.stat_blob(ref, sha(config)) == len(config)
    # A loopback registry is pinged over plain HTTP first (it answers 400: it speaks TLS), then one
    # TLS connection carries everything.
    assert [k[0] for k in made] == ["http", "https"], made
