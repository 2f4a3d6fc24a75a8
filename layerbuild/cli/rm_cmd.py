"""`layerbuild rm [-f] CONTAINER...`: delete stopped containers (a running one only with -f)."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    return "rm", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.runtime import containers
    from layerbuild.runtime.runner import remove

    with open_store(args) as store:
        root = store.root
    for ref in args.containers:
        remove(containers.find(root, ref), force=args.force)
        print(ref)
    return 0
