"""`layerbuild daemon start|stop|status`: this user's resident process, which runs commands from a
warm start (see `cli.launch` for which commands go to it and what they keep)."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from layerbuild.errors import UsageError


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("daemon", help="start, stop or show this user's resident process (faster start-up)")
    p.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="with start: end after this long without a command (default 10800; 0: never)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="with status: how to print it")
    return "daemon", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.cli import daemon

    if args.idle_timeout is not None and args.action != "start":
        raise UsageError("--idle-timeout goes with `daemon start`")
    if args.action == "start":
        return _start(daemon, daemon.IDLE_TIMEOUT if args.idle_timeout is None else args.idle_timeout)
    if args.action == "stop":
        status = daemon.control("status")
        if status is None:
            print("no layerbuild daemon runs")
            return 0
        daemon.control("stop")
        from layerbuild.store.layout import proc_start_time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc_start_time(int(status["pid"])) is not None:
            time.sleep(0.02)
        print(f"layerbuild daemon stopped (pid {status['pid']})")
        return 0
    status = daemon.control("status")
    if args.format == "json":
        print(json.dumps(status or {"running": False}))
        return 0 if status else 1
    if status is None:
        print("no layerbuild daemon runs")
        return 1
    up = time.time() - float(status["started"])
    print(f"layerbuild daemon: pid {status['pid']}, up {up:.0f}s, socket {status['socket']}\n"
          f"  commands run: {status['served']}, running now: {status['running']}, "
          f"run here instead: {status['refused']}")
    return 0


def _start(daemon: Any, idle: float) -> int:
    import subprocess

    status = daemon.control("status")
    if status is not None:
        print(f"a layerbuild daemon already runs (pid {status['pid']}, socket {status['socket']})")
        return 0
    read, write = os.pipe()
    sock = daemon.launch.socket_path(create=True)
    if sock is None:
        raise UsageError("the layerbuild daemon has no private directory for its socket",
                         hint="it must be the user's own with mode 0700: $XDG_RUNTIME_DIR/layerbuild or "
                              f"/tmp/layerbuild-{os.getuid()}")
    with open(os.devnull, "r+b") as null, open(daemon.launch.log_path(sock), "ab") as err:
        proc = subprocess.Popen([*daemon.launch.daemon_argv(), str(idle), str(write)], stdin=null, stdout=null,
                                stderr=err, pass_fds=(write,), start_new_session=True, close_fds=True)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        line = f.readline()
    try:
        message = json.loads(line) if line else {"error": f"it exited with {proc.wait()}"}
    except ValueError:
        message = {"error": f"it said {line!r}"}
    if "error" in message:
        raise UsageError(f"the layerbuild daemon did not start: {message['error']}",
                         hint="`layerbuild daemon status` says whether one runs")
    print(f"layerbuild daemon started (pid {message['pid']}, socket {message['socket']})")
    return 0
