"""`layerbuild import ROOTFS.tar NAME[:TAG]`: a one-layer base image from a rootfs tarball."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store
from layerbuild.errors import UsageError

if TYPE_CHECKING:
    pass


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("import", help="make an image from a rootfs tarball (plain, gzip or zstd; - for stdin)")
    p.add_argument("tarball", metavar="ROOTFS.tar")
    p.add_argument("name", metavar="NAME[:TAG]")
    return "import", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import import_rootfs

    with open_store(args) as store:
        if args.tarball == "-":
            result = import_rootfs(store, sys.stdin.buffer, args.name)
        else:
            try:
                src = open(args.tarball, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise UsageError(f"cannot read {args.tarball}: {exc.strerror}") from None
            with src:
                result = import_rootfs(store, src, args.name)
    print(f"{result.tag} {result.manifest}")
    return 0
