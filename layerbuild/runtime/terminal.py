"""`run -t`: receive the container's pty master and relay it to the caller's terminal.

The container's PID 1 opens a new pty inside the container's own devpts instance, makes it its
controlling terminal and stdio, and sends the master back over the console socket (a unix socket
pair: one end is the helper's stdin under `-t`, see `nsinit.setup_terminal`). This side relays
bytes between the master and the caller: stdin to the master (with `-i`), the master to stdout and
the container's log. With `-i` on a terminal, that terminal is put in raw mode for the relay, so
that Ctrl-C, Ctrl-Z and Ctrl-D reach the container's foreground process through the pty's line
discipline, and restored afterwards whatever happens. SIGWINCH copies the caller's size.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import select
import signal
import termios
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (socket is slow to import, and only `-t` needs it)
    import socket

_CHUNK = 65536


def console_pair() -> tuple[socket.socket, socket.socket]:
    """(ours, theirs): `theirs` becomes the helper's stdin, `ours` receives the master."""
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.set_inheritable(False)
    return ours, theirs


def receive_master(sock: socket.socket) -> int | None:
    """The master the container sent, or None if it sent none (it failed before making its pty).

    Called once the helper reported the container ready (or failed): the master is sent before
    that, so nothing here waits."""
    import socket

    fds = array.array("i")
    try:
        _, ancdata, _, _ = sock.recvmsg(1, socket.CMSG_LEN(fds.itemsize), socket.MSG_DONTWAIT)
    except (BlockingIOError, ConnectionError):
        return None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    for extra in fds[1:]:
        os.close(extra)
    if not fds:
        return None
    os.set_inheritable(fds[0], False)
    return fds[0]


def terminal_fd(*candidates: int) -> int | None:
    """The first of `candidates` that is a terminal (docker takes the size from stdout)."""
    for fd in candidates:
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                return fd
    return None


def copy_size(source: int | None, master: int) -> None:
    """Give the pty the size of the terminal `source`; the kernel sends SIGWINCH if it changed."""
    if source is None:
        return
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def raw_mode(fd: int | None) -> Iterator[None]:
    """The terminal `fd` in raw mode for the block, restored on the way out (also on errors)."""
    if fd is None:
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def modes_kept(fd: int | None) -> Iterator[None]:
    """The terminal `fd`'s modes as they were before the block, whatever the block did to them:
    without -t a container writes to the caller's terminal and could change them (`stty -echo`)."""
    saved = None
    if fd is not None:
        with contextlib.suppress(termios.error):
            saved = (fd, termios.tcgetattr(fd))
    try:
        yield
    finally:
        if saved is not None:
            with contextlib.suppress(termios.error):
                if termios.tcgetattr(saved[0]) != saved[1]:
                    termios.tcsetattr(saved[0], termios.TCSADRAIN, saved[1])


@contextlib.contextmanager
def follow_size(source: int | None, master: int) -> Iterator[None]:
    """Copy `source`'s size to the pty now and on every SIGWINCH during the block."""
    previous = signal.signal(signal.SIGWINCH, lambda _s, _f: copy_size(source, master))
    try:
        copy_size(source, master)  # a resize between the container's first copy and now
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def relay(master: int, stdin: int | None, stdout: int, log: int | None = None) -> None:
    """Copy stdin (None: not attached) to the master, and the master to stdout and `log`, until
    every process holding the pty's other side has ended, or the caller's side went away: stdin's
    terminal hung up (a terminal in raw mode has no end of input otherwise), or stdout cannot take
    more output (a closed pipe, a terminal that hung up). Closes nothing."""
    pending = b""  # read from stdin, not yet taken by the pty
    os.set_blocking(master, False)
    poller = select.poll()
    poller.register(master, select.POLLIN)
    poller.register(stdout, 0)  # only POLLHUP / POLLERR: nobody reads our output any more
    if stdin is not None:
        poller.register(stdin, select.POLLIN)
    while True:
        for fd, events in poller.poll():
            if fd == master:
                if events & select.POLLOUT and pending:
                    pending = pending[_write_some(master, pending):]
                    if not pending:
                        poller.modify(master, select.POLLIN)
                        if stdin is not None:
                            poller.register(stdin, select.POLLIN)
                if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    data = _read(master)
                    if data is None:
                        continue
                    if not data:
                        return
                    if log is not None:
                        _write_all(log, data)
                    if not _write_all(stdout, data):
                        return
            elif fd == stdin:
                data = _read(stdin)
                if data is None:
                    continue
                if not data:
                    return
                poller.unregister(stdin)
                pending = data
                poller.modify(master, select.POLLIN | select.POLLOUT)
            elif events & (select.POLLHUP | select.POLLERR):
                return


def _read(fd: int) -> bytes | None:
    """Some bytes; b"" at the end (EIO from a pty whose other side is closed, or from a terminal
    that hung up, is the usual way); None if none are ready."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def _write_some(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


def _write_all(fd: int, data: bytes) -> bool:
    """False if `fd` cannot take output any more (the caller's terminal went away)."""
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                select.select([], [fd], [])
    except OSError:
        return False
    return True
