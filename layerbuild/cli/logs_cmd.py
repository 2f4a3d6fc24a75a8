"""`layerbuild logs [-f] CONTAINER`: what a detached container wrote, followed with -f until it ends."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("logs", help="print a container's output")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the container exits")
    p.add_argument("container", metavar="CONTAINER")
    return "logs", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.runtime import containers
    from layerbuild.runtime.runner import follow_log

    with open_store(args) as store:
        root = store.root
    c = containers.find(root, args.container)
    out = sys.stdout.buffer
    for chunk in follow_log(c, args.follow):
        out.write(chunk)
        out.flush()
    return 0
