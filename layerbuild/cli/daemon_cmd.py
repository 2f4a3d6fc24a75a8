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
    p.add_argument("--all", action="store_true",
                   help="with stop: also this user's daemons of other installations (interpreters or copies)")
    return "daemon", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.cli import daemon

    if args.idle_timeout is not None and args.action != "start":
        raise UsageError("--idle-timeout goes with `daemon start`")
    if args.action == "start":
        return _start(daemon, daemon.IDLE_TIMEOUT if args.idle_timeout is None else args.idle_timeout)
    if args.all and args.action != "stop":
        raise UsageError("--all goes with `daemon stop`")
    if args.action == "stop":
        status = daemon.control("status")
        others = daemon.others() if status is None or args.all else []  # (asked only when of use)
        if status is None and not (args.all and others):
            print("no layerbuild daemon runs" + _elsewhere(others))
            return 0
        for each in ([status] if status else []) + others:
            _stop(daemon, each)
        return 0
    status = daemon.control("status")
    if args.format == "json":
        print(json.dumps(status or {"running": False}))
        return 0 if status else 1
    if status is None:
        print("no layerbuild daemon runs" + _elsewhere(daemon.others()) + _failed_start(daemon))
        return 1
    up = time.time() - float(status["started"])
    print(f"layerbuild daemon: pid {status['pid']}, up {up:.0f}s, socket {status['socket']}\n"
          f"  commands run: {status['served']}, running now: {status['running']}, "
          f"run here instead: {status['refused']}")
    return 0


def _stop(daemon: Any, status: dict[str, Any]) -> None:
    """Ask the daemon that gave `status` to stop, and wait (up to 30 s) until its process is gone."""
    from layerbuild.store.layout import proc_start_time

    daemon.control("stop", status["socket"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc_start_time(int(status["pid"])) is not None:
        time.sleep(0.02)
    print(f"layerbuild daemon stopped (pid {status['pid']})")


def _failed_start(daemon: Any) -> str:
    """What to add when the last start failed recently (no command starts one again for a while)."""
    path = daemon.launch.socket_path()
    if path is None:
        return ""
    try:
        with open(daemon.launch.failed_path(path), encoding="utf-8") as f:
            why, ago = f.read().strip(), time.time() - os.fstat(f.fileno()).st_mtime
    except OSError:
        return ""
    left = daemon.launch.RETRY_FAILED_START - ago
    if left <= 0:
        return ""
    return (f"\nits last start failed {ago:.0f}s ago: {why}\n"
            f"  commands run in their own processes and start none for {left / 60:.0f} more minutes; "
            "`layerbuild daemon start` tries now")


def _elsewhere(others: list[dict[str, Any]]) -> str:
    """What to add to "no layerbuild daemon runs" when daemons of other installations do."""
    if not others:
        return ""
    lines = [f" for this installation; {len(others)} of another one "
             f"{'runs' if len(others) == 1 else 'run'} (`layerbuild daemon stop --all` stops them too):"]
    for status in others:
        python, _prefix, package = (str(status.get("identity", "")).split("\0") + ["?", "?", "?"])[:3]
        lines.append(f"  pid {status['pid']}: {python}, layerbuild in {package}")
    return "\n".join(lines)


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
