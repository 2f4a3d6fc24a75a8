"""Published ports: a process that listens in the host's namespace and connects inside a network's (stdlib only).

Run by `spec.helper_argv` (`python -I -S`, `main()` reading SPEC_FD STATUS_FD; see `ports.py`). It binds every host address and
port first, in the host's network namespace, then moves itself (setns) into the namespace of the
network where the container has its address (rootless, entering the user namespace that owns it
first, before any thread exists): connections accepted on the host side are relayed to
`target_ip:target_port` there, one thread each way. A UDP port relays datagrams: each client
(address and port) gets a socket of its own inside, connected to the target, whose replies go back
to that client from the published port; it is dropped after UDP_IDLE seconds without traffic, as a
connection-tracking entry expires. `ready PORT...` (the host ports bound, in order: a
host port 0 is one the kernel picked) or `error MESSAGE` goes back on STATUS_FD. It ends by itself once the container's process (pid and start time) is gone, so a crash
of the container never leaves a listener behind; `stop` of the container kills it earlier.
"""

from __future__ import annotations

import ctypes
import marshal
import os
import socket
import sys
import threading
import time

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
UDP_IDLE = 90.0  # seconds, as docker-proxy keeps a UDP flow


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return None if len(fields) <= 19 or fields[0] in (b"Z", b"X") else int(fields[19])


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def _serve(conn: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        conn.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
    back.start()
    _pipe(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def _accept(listener: socket.socket, target: tuple[str, int]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=_serve, args=(conn, target), daemon=True).start()


def _udp_replies(inner: socket.socket, outer: socket.socket, client: tuple[object, ...],
                 flows: dict[tuple[object, ...], socket.socket], lock: threading.Lock) -> None:
    inner.settimeout(UDP_IDLE)
    try:
        while True:
            data = inner.recv(65535)
            outer.sendto(data, client)
    except OSError:  # idle for UDP_IDLE, or the target refused (ICMP port unreachable)
        pass
    finally:
        with lock:
            if flows.get(client) is inner:
                del flows[client]
        inner.close()


def _udp(outer: socket.socket, target: tuple[str, int]) -> None:
    flows: dict[tuple[object, ...], socket.socket] = {}
    lock = threading.Lock()
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    while True:
        try:
            data, client = outer.recvfrom(65535)
        except OSError:
            return
        with lock:
            inner = flows.get(client)
            if inner is None:
                try:
                    inner = socket.socket(family, socket.SOCK_DGRAM)
                    inner.connect(target)
                except OSError:
                    continue
                flows[client] = inner
                threading.Thread(target=_udp_replies, args=(inner, outer, client, flows, lock), daemon=True).start()
        try:
            inner.send(data)
        except OSError:
            pass


def main() -> int:
    spec_fd, status = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as f:
        spec = marshal.loads(f.read())
    listeners = []
    bound: list[str] = []
    try:
        for p in spec["ports"]:
            family = socket.AF_INET6 if ":" in p["host_ip"] else socket.AF_INET
            udp = p.get("protocol") == "udp"
            s = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if not udp:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((p["host_ip"], p["host_port"]))
            except OSError as exc:
                raise OSError(f"cannot publish {p['host_ip']}:{p['host_port']}/{p.get('protocol', 'tcp')}: "
                              f"{exc.strerror}") from None
            if not udp:
                s.listen(128)
            listeners.append((s, (p["target_ip"], p["target_port"]), udp))
            bound.append(str(s.getsockname()[1]))  # the port the kernel picked for host port 0
        libc = ctypes.CDLL(None, use_errno=True)
        if spec.get("userns"):  # rootless: the user namespace that owns the network's, first
            fd = os.open(spec["userns"], os.O_RDONLY)
            if libc.setns(fd, CLONE_NEWUSER) != 0:
                raise OSError(f"cannot enter the user namespace: {os.strerror(ctypes.get_errno())}")
            os.close(fd)
        fd = os.open(spec["netns"], os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(f"cannot enter the network namespace: {os.strerror(ctypes.get_errno())}")
        os.close(fd)
    except OSError as exc:
        os.write(status, f"error {exc}\n".encode())
        return 1
    for s, target, udp in listeners:  # threads made after setns are in the network's namespace too
        threading.Thread(target=_udp if udp else _accept, args=(s, target), daemon=True).start()
    os.write(status, f"ready {' '.join(bound)}\n".encode())
    os.close(status)
    pid, start = spec["watch_pid"], spec["watch_start"]
    while _start_time(pid) == start:
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
