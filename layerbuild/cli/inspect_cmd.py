"""`layerbuild inspect IMAGE`: one image as JSON: its id, manifest digest, tags, layers and OCI config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store

if TYPE_CHECKING:
    pass


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("inspect", help="show an image's config and layers as JSON")
    p.add_argument("image", metavar="IMAGE", help="NAME[:TAG], image id (12+ hex digits) or manifest digest")
    return "inspect", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import read_blob, resolve_image

    with open_store(args) as store:
        image = resolve_image(store, args.image)
        config = json.loads(read_blob(store, image.config_digest, "config"))  # as stored, unknown fields too
    doc = {
        "id": image.id,
        "manifest": image.manifest_digest,
        "tags": list(image.tags),
        "created": image.config.created,
        "architecture": image.config.architecture,
        "os": image.config.os,
        "size": image.size,
        "layers": [
            {
                "digest": layer.digest,
                "diff_id": layer.diff_id,
                "size": layer.size,
                "diff_size": layer.diff_size,
                "media_type": layer.media_type,
            }
            for layer in image.layers
        ],
        "config": config,
    }
    json.dump(doc, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0
