"""A helper process that owns a private mount namespace for a build's read-only filesystem views.

Run as a script (stdlib only, started with `python -I -S`), never imported by the build: it enters
a new mount namespace (a fresh, single-threaded process can, where the library's threaded caller
cannot), makes every mount in it private, and then serves requests on stdin, one per line:

    mount <TAB> target <TAB> overlay options    ->  "ok" | "error <errno> <message>"
    bind <TAB> target <TAB> source              ->  "ok" | "error <errno> <message>"  (read-only)

It exits when stdin ends, which happens when its parent closes the pipe or dies however it dies
(SIGKILL included); with it goes the namespace and every mount in it, so nothing is ever mounted in
the caller's namespace. The caller reads the views through `/proc/<helper pid>/root/<target>`.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
SIGKILL = 9  # (not `signal`: its enum tables were a quarter of this helper's start-up)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setup(parent: int, pdeathsig: bool) -> None:
    if pdeathsig:
        # Only asked for when the parent's main thread started us: the signal follows the thread.
        _check(_libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0), "prctl")
    if os.getppid() != parent:  # the parent died before we could notice
        sys.exit(0)
    _check(_libc.unshare(CLONE_NEWNS), "unshare")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")


def serve() -> None:
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    parent = os.getppid()
    buffer = b""
    while True:
        # Also wake now and then: if the parent is gone but a stray copy of the pipe keeps it open.
        ready, _, _ = select.select([0], [], [], 2.0)
        if not ready:
            if os.getppid() != parent:
                return
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            out.write(handle(line) + "\n")
            out.flush()


def handle(line: bytes) -> str:
    parts = line.split(b"\t")
    if len(parts) == 3 and parts[0] == b"mount":
        flags = MS_RDONLY | MS_NOSUID | MS_NODEV
        if _libc.mount(b"overlay", parts[1], b"overlay", flags, parts[2]) != 0:
            err = ctypes.get_errno()
            return f"error {err} {os.strerror(err)}"
        return "ok"
    if len(parts) == 3 and parts[0] == b"bind":  # one layer's snapshot as it is, read-only
        flags = MS_RDONLY | MS_NOSUID | MS_NODEV
        if _libc.mount(parts[2], parts[1], None, MS_BIND, None) != 0 \
                or _libc.mount(None, parts[1], None, MS_BIND | MS_REMOUNT | flags, None) != 0:
            err = ctypes.get_errno()
            _libc.umount2(parts[1], 2)  # MNT_DETACH: no half-made view stays behind
            return f"error {err} {os.strerror(err)}"
        return "ok"
    return "error 22 unknown request"


def main() -> None:
    parent = int(sys.argv[1])
    try:
        setup(parent, pdeathsig=len(sys.argv) > 2 and sys.argv[2] == "pdeathsig")
    except OSError as exc:
        sys.stdout.write(f"error {exc.errno} {exc.strerror}\n")
        sys.stdout.flush()
        return
    serve()
    # Every reply is flushed: nothing is left for the interpreter's teardown, which the build waits
    # for (it reaps this helper as it ends); the kernel drops the namespace and its mounts either way.
    os._exit(0)


if __name__ == "__main__":
    main()
