"""`layerbuild load -i FILE`: images from a docker save or OCI archive into the store."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("load", help="load images from a docker save or OCI archive")
    p.add_argument("-i", "--input", required=True, metavar="FILE")
    return "load", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image.load import load_archive

    with open_store(args) as store:
        for loaded in load_archive(store, args.input):
            names = ", ".join(loaded.tags) if loaded.tags else "(untagged)"
            print(f"Loaded image: {names} {loaded.image.id}")
    return 0
