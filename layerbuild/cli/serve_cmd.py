"""`layerbuild serve --stdio`: answer a client on standard input/output (started by it over SSH)."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.errors import UsageError


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("serve", help="serve a remote client (`--host ssh://...`) on standard input and output")
    p.add_argument("--stdio", action="store_true", help="speak the protocol on standard input and output")
    return "serve", run


def run(args: argparse.Namespace) -> int:
    if not args.stdio:
        raise UsageError("`layerbuild serve` needs --stdio",
                         hint="clients start it over SSH themselves: `layerbuild --host ssh://USER@HOST ...`")
    from layerbuild.cli.main import main
    from layerbuild.remote.server import serve_stdio

    return serve_stdio(main, args.root)
