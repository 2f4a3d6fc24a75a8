"""`layerbuild stop [-t SECS] CONTAINER`: the image's StopSignal (default SIGTERM), SIGKILL after SECS."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("stop", help="stop a running container")
    p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECS",
                   help="seconds to wait before killing it (default 10)")
    p.add_argument("container", metavar="CONTAINER")
    return "stop", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.runtime import containers
    from layerbuild.runtime.runner import stop

    with open_store(args) as store:
        root = store.root
    c = containers.find(root, args.container)
    stop(c, args.time)
    print(args.container)
    return 0
