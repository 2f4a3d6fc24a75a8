"""`layerbuild exec [-i] [-t] [-e K=V] [-u USER] [-w DIR] CONTAINER CMD...`: run a command in a running container."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    p.add_argument("-u", "--user", help="user (name|uid[:group|gid]; default: the container's)")
    p.add_argument("-w", "--workdir", help="working directory (default: the container's)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    p.add_argument("-t", "--tty", action="store_true", help="a pseudo-terminal for the command, relayed to the caller's")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")
    return "exec", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.errors import LayerbuildError
    from layerbuild.runtime import containers
    from layerbuild.runtime.enter import exec_in

    try:
        with open_store(args) as store:
            root = store.root
        c = containers.find(root, args.container)
        return exec_in(c, args.command, env=args.env, user=args.user, workdir=args.workdir,
                       stdin=None if args.interactive else subprocess.DEVNULL, tty=args.tty, forward_signals=True)
    except LayerbuildError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return 126 if exc.exit_code == 125 else exc.exit_code
