"""`layerbuild rmi IMAGE...`: remove tags; the blobs stay until `layerbuild prune` finds them unused."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store

if TYPE_CHECKING:
    pass


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("rmi", help="remove image tags (space is freed by `prune`)")
    p.add_argument(
        "images", metavar="IMAGE", nargs="+", help="NAME[:TAG], or an image id to remove all its tags"
    )
    p.add_argument("-f", "--force", action="store_true", help="remove every tag of an image given by id")
    return "rmi", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import untag_image

    with open_store(args) as store:
        for ref in args.images:
            for name in untag_image(store, ref, force=args.force):
                print(f"Untagged: {name}")
    return 0
