"""`layerbuild images [--json]`: the tagged images in the store, newest first, like `docker images`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import human_size, open_store

if TYPE_CHECKING:
    pass


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("images", help="list tagged images")
    p.add_argument(
        "--json", action="store_true", help='print a JSON list of {"name","tag","id","created","size"}'
    )
    p.add_argument("--digests", action="store_true", help="show the repo digest each image was pulled with")
    return "images", run


def _repo_digest(store: Any, tag: str, manifest: str) -> str | None:
    """The registry's digest of the image `tag` names, recorded when it was pulled (or pushed)."""
    from layerbuild.errors import UsageError
    from layerbuild.reference import parse_reference

    try:
        repo = parse_reference(tag.rpartition(":")[0]).name
    except UsageError:
        return None
    return next((d for name, d in store.index.repo_digests_of(manifest) if name == repo), None)


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import list_images, split_tag
    from layerbuild.reference import familiar

    with open_store(args) as store:
        listed = list_images(store)
        digests = {tag: _repo_digest(store, tag, image.manifest_digest) for tag, image in listed} if args.digests else {}
    # Docker's familiar names: `docker.io/library/busybox:latest` is shown as `busybox`.
    rows = tuple((familiar(tag), image, digests.get(tag)) for tag, image in listed)
    if args.json:
        entries = [
            {
                "name": name,
                "tag": version,
                "id": image.id,
                "created": image.config.created,
                "size": image.size,
                **({"digest": digest} if args.digests else {}),
            }
            for (name, version), image, digest in ((split_tag(tag), image, digest) for tag, image, digest in rows)
        ]
        json.dump(entries, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    table = [["REPOSITORY", "TAG", *(["DIGEST"] if args.digests else []), "IMAGE ID", "CREATED", "SIZE"]]
    for tag, image, digest in rows:
        name, version = split_tag(tag)
        table.append([name, version, *([digest or "<none>"] if args.digests else []), image.short_id,
                      since(image.config.created), human_size(image.size)])
    sys.stdout.write(columns(table))
    return 0


def since(created: str | None, now: float | None = None) -> str:
    """`2 hours ago`, as docker words it; `N/A` when the config has no readable time."""
    from layerbuild.image import parse_created

    moment = parse_created(created)
    if moment is None:
        return "N/A"
    seconds = int((time.time() if now is None else now) - moment.timestamp())
    if seconds < 1:
        return "Less than a second ago"
    for unit, size in (
        ("year", 365 * 86400),
        ("month", 30 * 86400),
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ):
        if seconds >= size:
            count = seconds // size
            if count == 1:
                return f"{'An' if unit == 'hour' else 'A'} {unit} ago" if unit != "second" else "1 second ago"
            return f"{count} {unit}s ago"
    raise AssertionError("unreachable")


def columns(rows: Sequence[Sequence[str]]) -> str:
    """Rows as left-aligned columns three spaces apart, like docker's tab writer."""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"
