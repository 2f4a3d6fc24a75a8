"""The registry's HTTP/1.1 client (`wire`, on http.client) against small servers on loopback that behave
well and badly: connections reused only after a whole answer, stale ones noticed, truncated bodies and
timeouts raised as its errors, chunked bodies both ways, proxies from the environment (plain HTTP in
absolute form, HTTPS through CONNECT, `no_proxy`), URLs, headers and links. (TLS, auth, redirects and
the fault proxy run through it in test_client.py and the pull/push tests.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from layerbuild.registry import wire
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


def client(timeout: float = 5.0) -> wire.Client:
    return wire.Client(None, timeout=timeout, connect_timeout=timeout, env={})


def test_a_connection_is_reused_once_an_answer_is_read_to_its_end(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    with client() as c:
        big = c.get(f"{url}/3000000")
        assert big.content == bytes(i % 251 for i in range(3_000_000))
        head = c.request("HEAD", f"{url}/x")
        assert head.headers["content-length"] == "1234" and head.read() == b""  # a HEAD's answer has no body
        assert c.get(f"{url}/7").content == bytes(range(7))
    assert len(set(handler.peers)) == 1, handler.peers


def test_an_answer_left_unread_closes_its_connection(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    with client() as c:
        with c.request("GET", f"{url}/5000000") as resp:
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

        put = c.request("PUT", f"{url}/up", content=parts())
        assert put.status_code == 201 and put.read() == b""
        assert c.post(f"{url}/up", content=b"sized body").status_code == 201
    assert handler.bodies == [b"first second", b"sized body"]
    assert len(set(handler.peers)) == 1


def _read_head(conn: socket.socket) -> bytes:
    """What a peer sent up to the end of its request's head (and whatever came with it), or less if it
    closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        got = conn.recv(65536)
        if not got:
            break
        buf += got
    return buf


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
                _read_head(conn)
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
    with client() as c, pytest.raises(wire.RemoteProtocolError, match="90 bytes left"):
        c.get(f"{truncating}/blob")


def test_a_connection_the_peer_closed_is_not_used_again(closing_after_answer: str) -> None:
    with client() as c:
        assert c.get(f"{closing_after_answer}/a").content == b"ok"
        threading.Event().wait(0.1)  # the server has closed its end by now
        assert c.get(f"{closing_after_answer}/b").content == b"ok"


def test_refused_and_silent_peers_are_the_clients_errors(silent: str) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with client() as c, pytest.raises(wire.ConnectError):
        c.get(f"http://127.0.0.1:{port}/")
    with client(0.3) as c, pytest.raises(wire.ReadTimeout):
        c.get(f"{silent}/")


def test_https_without_tls_settings_is_refused() -> None:
    with client() as c, pytest.raises(wire.ConnectError, match="no TLS settings"):
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

    made: list[tuple[str, str, int, str]] = []
    connect = wire.Client._connect

    def counted(self: wire.Client, key: tuple[str, str, int, str]) -> object:
        made.append(key)
        return connect(self, key)

    monkeypatch.setattr(wire.Client, "_connect", counted)
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


# --- proxies from the environment -------------------------------------------------------------------


class _Proxy:
    """An HTTP proxy on loopback: absolute-form requests forwarded, CONNECT tunnelled; what it was asked
    (the request line and whether Proxy-Authorization came with it) is recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.encodings: list[str] = []  # each request's Accept-Encoding
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        import urllib.parse

        with conn:
            head = _read_head(conn)
            if b"\r\n\r\n" not in head:
                return
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ")
            fields = dict(line.split(": ", 1) for line in lines[1:])
            self.seen.append((lines[0], fields.get("Proxy-Authorization")))
            self.encodings.append(fields.get("Accept-Encoding", ""))
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._pipe(conn, upstream)
                return
            url = urllib.parse.urlsplit(target)
            upstream = socket.create_connection((url.hostname, url.port or 80))
            kept = [f"{method} {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1"]
            kept += [f"{k}: {v}" for k, v in fields.items() if k.lower() != "proxy-authorization"]
            upstream.sendall(("\r\n".join(kept) + "\r\n\r\n").encode("latin-1") + rest)
            self._pipe(conn, upstream)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        from layerbuild.runtime.forward import _pipe as one_way  # a port forward's copy, half-closing

        t = threading.Thread(target=one_way, args=(b, a), daemon=True)
        t.start()
        one_way(a, b)
        t.join(5)
        b.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    p = _Proxy()
    try:
        yield p
    finally:
        p.close()


def test_plain_http_goes_through_the_proxy_in_absolute_form(server: tuple[str, type[_Handler]], proxy: _Proxy) -> None:
    url, handler = server
    user_proxy = proxy.url.replace("http://", "http://pat:s%40cret@")
    with wire.Client(None, timeout=5, env={"HTTP_PROXY": user_proxy, "NO_PROXY": "example.org"}) as c:
        assert c.get(f"{url}/7").content == bytes(range(7))
    import base64

    assert proxy.seen == [(f"GET {url}/7 HTTP/1.1", "Basic " + base64.b64encode(b"pat:s@cret").decode())]
    assert handler.peers  # the server was reached, through the proxy


def test_https_goes_through_a_connect_tunnel(tls_registry: Registry, proxy: _Proxy,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole registry session over TLS through HTTPS_PROXY: the proxy sees only CONNECT, the
    certificate is checked against the registry's name, and the credentials travel inside the tunnel."""
    from tests.registry.fixtures import client_for
    from tests.registry.test_client import image, ref_of, sha

    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    _, layer, _ = image()
    with client_for(tls_registry) as client:
        ref = ref_of(tls_registry.host, "wire/proxied:1")
        assert client.upload_blob(ref, sha(layer), len(layer), layer) == "uploaded"
        assert client.get_blob(ref, sha(layer)) == layer
    lines = [line for line, _ in proxy.seen]
    assert f"CONNECT {tls_registry.host} HTTP/1.0" in lines  # (http.client's CONNECT says 1.0)
    # The ping tried plain HTTP first (the registry is on loopback), through the proxy as well.
    assert all(line.startswith(("CONNECT ", f"GET http://{tls_registry.host}/v2/ ")) for line in lines), lines
    assert all(auth is None for _, auth in proxy.seen)


@pytest.mark.parametrize(("no_proxy", "host", "port", "bypassed"), [
    ("", "reg.example", 443, False),
    ("*", "reg.example", 443, True),
    ("reg.example", "reg.example", 443, True),
    ("example", "reg.example", 443, True),  # a domain covers its subdomains, as curl and Go read it
    (".example", "reg.example", 443, True),
    ("*.example", "reg.example", 443, True),
    ("other.example, reg.example:5000", "reg.example", 443, False),
    ("reg.example:5000", "reg.example", 5000, True),
    ("10.0.0.0/8", "10.1.2.3", 80, True),
    ("10.0.0.0/8", "11.1.2.3", 80, False),
    ("[::1]:5000", "::1", 5000, True),
    ("notexample", "reg.example", 443, False),
])
def test_no_proxy(no_proxy: str, host: str, port: int, bypassed: bool) -> None:
    env = {"https_proxy": "proxy.internal:3128", "NO_PROXY": no_proxy}
    assert wire.proxy_for("https", host, port, env) == (None if bypassed else "http://proxy.internal:3128")


def test_which_proxy_variable_is_read() -> None:
    assert wire.proxy_for("http", "h", 80, {}) is None
    assert wire.proxy_for("http", "h", 80, {"HTTPS_PROXY": "http://p:1"}) is None
    assert wire.proxy_for("https", "h", 443, {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:1"}) == "http://a:1"
    assert wire.proxy_for("https", "h", 443, {"ALL_PROXY": "http://c:1"}) == "http://c:1"


def test_a_proxy_that_is_not_http_is_refused() -> None:
    with wire.Client(None, timeout=1, env={"http_proxy": "socks5://127.0.0.1:9"}) as c, \
            pytest.raises(wire.ConnectError, match="only http:// proxies"):
        c.get("http://reg.example/v2/")


# --- URLs, headers, links, content codings -----------------------------------------------------------


def test_urls() -> None:
    u = wire.URL("https://Reg.Example:443/v2/x/blobs/uploads/?_state=abc")
    assert (u.scheme, u.host, u.port, u.netloc) == ("https", "reg.example", None, "reg.example")
    assert u.origin == ("https", "reg.example", 443)
    assert u.target == "/v2/x/blobs/uploads/?_state=abc"
    assert str(u.with_params({"digest": "sha256:ab"})) == \
        "https://Reg.Example:443/v2/x/blobs/uploads/?_state=abc&digest=sha256%3Aab"
    v6 = wire.URL("http://[::1]:5000/v2/")
    assert (v6.host, v6.port, v6.netloc, v6.origin) == ("::1", 5000, "[::1]:5000", ("http", "::1", 5000))
    assert str(v6.join("/v2/a/tags/list?last=b&n=2")) == "http://[::1]:5000/v2/a/tags/list?last=b&n=2"
    assert str(v6.join("https://storage.example/blob?sig=1")) == "https://storage.example/blob?sig=1"
    assert wire.URL("http://u:p@h:81/").userinfo == "u:p" and wire.URL("http://u:p@h:81/").netloc == "h:81"
    assert wire.URL("http://h").target == "/"


def test_headers_and_links() -> None:
    h = wire.Headers([("WWW-Authenticate", 'Basic realm="a"'), ("www-authenticate", 'Bearer realm="b"'),
                      ("Link", '</v2/a/tags/list?n=2&last=b>; rel="next"')])
    assert h.get("www-authenticate") == 'Basic realm="a", Bearer realm="b"'
    assert "WWW-AUTHENTICATE" in h and "location" not in h and h.get("location") is None
    with pytest.raises(KeyError):
        h["location"]
    resp = wire.Response(200, h)
    assert resp.links == {"next": {"url": "/v2/a/tags/list?n=2&last=b", "rel": "next"}}
    assert wire.Response(200).links == {} and wire.Response(404).reason_phrase == "Not Found"


def test_a_gzip_coded_answer_is_inflated_unless_read_raw() -> None:
    import gzip

    body = b'{"tags": ["1"]}' * 100
    coded = gzip.compress(body)
    assert wire.Response(200, {"Content-Encoding": "gzip"}, coded).read() == body
    assert b"".join(wire.Response(200, {"Content-Encoding": "gzip"}, coded).iter_raw()) == coded
    assert wire.Response(200, {}, coded).read() == coded
    with pytest.raises(wire.RemoteProtocolError, match="damaged"):
        wire.Response(200, {"Content-Encoding": "gzip"}, b"not gzip").read()


def test_requests_ask_for_no_content_coding_unless_told(server: tuple[str, type[_Handler]], proxy: _Proxy) -> None:
    """Seen by the recording proxy: `Accept-Encoding: identity` by default (what a digest covers is
    the bytes as stored), the caller's own value when it gives one."""
    url, _ = server
    for headers in ({}, {"Accept-Encoding": "gzip"}):  # (a client each: this proxy serves one request a connection)
        with wire.Client(None, timeout=5, env={"http_proxy": proxy.url}) as c:
            assert c.get(f"{url}/4", headers=headers).content == bytes(range(4))
    assert proxy.encodings == ["identity", "gzip"]


def test_a_header_http_cannot_carry_is_an_error_not_a_crash(server: tuple[str, type[_Handler]]) -> None:
    url, _ = server
    with client() as c, pytest.raises(wire.UnsupportedProtocol, match="cannot be sent"):
        c.get(f"{url}/3", headers={"Authorization": "Bearer a\r\nX-Injected: 1"})
