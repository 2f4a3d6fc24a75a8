"""`layerbuild history IMAGE`: the steps that made an image, newest first, like `docker history`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import human_size, open_store
from layerbuild.cli.images_cmd import columns, since

if TYPE_CHECKING:
    pass

_TRUNC = 45  # docker's width for CREATED BY


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("history", help="show the history of an image")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten the CREATED BY column")
    p.add_argument("--json", action="store_true", help="print a JSON list, newest step first")
    return "history", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import resolve_image

    with open_store(args) as store:
        image = resolve_image(store, args.image)
    sizes = {layer.diff_id: layer.diff_size for layer in image.layers}
    steps = list(reversed(image.config.layer_history()))
    if args.json:
        out = [
            {
                "id": image.id if i == 0 else None,
                "created": entry.created,
                "created_by": entry.created_by,
                "comment": entry.comment,
                "empty_layer": diff_id is None,
                "layer": diff_id,
                "size": sizes.get(diff_id, 0) if diff_id else 0,
            }
            for i, (entry, diff_id) in enumerate(steps)
        ]
        json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    table = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for i, (entry, diff_id) in enumerate(steps):
        created_by = " ".join(entry.created_by.split()) if not args.no_trunc else entry.created_by
        if not args.no_trunc and len(created_by) > _TRUNC:
            created_by = created_by[: _TRUNC - 1] + "…"
        size = sizes.get(diff_id, 0) if diff_id else 0
        table.append(
            [
                image.short_id if i == 0 else "<missing>",
                since(entry.created),
                created_by,
                human_size(size) if size else "0B",
                entry.comment,
            ]
        )
    sys.stdout.write(columns(table))
    return 0
