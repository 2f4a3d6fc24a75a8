"""`layerbuild tag SRC DST`: give an image another name (`name` means `name:latest`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store

if TYPE_CHECKING:
    pass


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("tag", help="create a tag TARGET that refers to the image SOURCE")
    p.add_argument("source", metavar="SRC", help="NAME[:TAG], image id or manifest digest")
    p.add_argument("target", metavar="DST", help="NAME[:TAG]")
    return "tag", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import tag_image

    with open_store(args) as store:
        tag_image(store, args.source, args.target)
    return 0
