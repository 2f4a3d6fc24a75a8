"""`layerbuild fsck`: verify every blob and index reference; exit 1 if anything was wrong."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from layerbuild.cli.common import open_store
from layerbuild.errors import StoreError


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("fsck", help="verify the store (bad blobs are quarantined)")
    p.add_argument("--dry-run", action="store_true", help="report only; move and drop nothing")
    return "fsck", run


def run(args: argparse.Namespace) -> int:
    try:
        store = open_store(args)
    except StoreError as exc:  # a store that cannot even be opened is fsck's to diagnose, not to crash on
        print(f"index: {exc.message} (none)", file=sys.stderr)
        print("hint: fsck cannot repair this; move the store root aside (keep it to recover from) and use a "
              "new one", file=sys.stderr)
        print("fsck: the store cannot be opened, 1 problem(s)")
        return 1
    with store:
        report = store.fsck(repair=not args.dry_run)
    for problem in report.problems:
        print(f"{problem.kind}: {problem.subject}: {problem.detail} ({problem.action})", file=sys.stderr)
    if report.read_only:
        print("fsck: the disk is full: checked only, nothing repaired "
              "(free space, e.g. with `layerbuild prune`, then run fsck again)", file=sys.stderr)
    status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"fsck: {report.blobs_checked} blob(s) and {report.cache_files_checked} cache file(s) checked, {status}")
    return 0 if report.ok else 1
