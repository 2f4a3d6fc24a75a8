"""`layerbuild save IMAGE -o FILE [--format docker|oci]`: an archive that docker load / skopeo read."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("save", help="write an image to a docker or OCI archive")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--format", choices=("docker", "oci"), default="docker")
    return "save", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image.archive import save
    from layerbuild.image.store_io import resolve_image

    with open_store(args) as store:
        image = resolve_image(store, args.image)
        tags = [args.image] if ":" in args.image.rpartition("/")[2] or args.image in image.tags else ()
        save(store, image, args.output, args.format, tags or image.tags)
    return 0
