"""`layerbuild prune [--all] [--keep-storage SIZE]`: free space; never what a tag still needs."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import human_size, open_store, parse_size


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("prune", help="remove cache and blobs that no tag needs")
    p.add_argument("--all", action="store_true", help="also drop every cache record")
    p.add_argument("--keep-storage", metavar="SIZE", help="stop once the store is at most SIZE (e.g. 10GB)")
    return "prune", run


def run(args: argparse.Namespace) -> int:
    keep = parse_size(args.keep_storage) if args.keep_storage is not None else None
    with open_store(args) as store:
        report = store.prune(all=args.all, keep_storage=keep)
    from layerbuild.runtime.cgroups import remove_leftovers

    remove_leftovers()  # the empty cgroups that killed builds and exited containers left
    print(
        f"removed {report.cache_records} cache record(s), {len(report.blobs)} blob(s), "
        f"{len(report.snapshots)} snapshot(s), {report.cache_files} cache file(s); reclaimed {human_size(report.reclaimed)}, "
        f"{human_size(report.remaining)} remain"
    )
    return 0
