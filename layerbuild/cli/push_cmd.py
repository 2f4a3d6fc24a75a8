"""`layerbuild push NAME[:TAG] [--format docker|oci] [--compression gzip|zstd] [-q]`: an image of the
store into its registry, with docker push's output."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("push", help="push an image to a registry")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.add_argument("--format", choices=("docker", "oci"), default=None,
                   help="manifest and media types (default: docker; oci with --compression zstd)")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip",
                   help="layer compression (default gzip; zstd needs --format oci)")
    p.add_argument("--progress", choices=("auto", "tty", "plain", "json", "quiet"), default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the name pushed, as docker push -q")
    return "push", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.cli.transfers import make_transfer_progress
    from layerbuild.registry.push import check_options, push

    check_options(args.format, args.compression)
    progress = make_transfer_progress("quiet" if args.quiet else args.progress)
    try:
        with open_store(args) as store:
            result = push(store, args.name, fmt=args.format, compression=args.compression, on_event=progress)
    finally:
        progress.close()
    if args.quiet:
        print(result.reference)
    return 0
