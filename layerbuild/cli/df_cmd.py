"""`layerbuild df`: space used in the store, by kind, and how much `prune` would free."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import human_size, open_store


def register(sub: Any) -> tuple[str, Any]:
    sub.add_parser("df", help="show the store's disk usage")
    return "df", run


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    with open_store(args) as store:
        report = store.df()
        root = store.root
    table = Table(show_edge=False, pad_edge=False)
    for name, justify in (("TYPE", "left"), ("COUNT", "right"), ("SIZE", "right"), ("RECLAIMABLE", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for entry in report.entries:
        table.add_row(entry.kind, str(entry.count), human_size(entry.size), human_size(entry.reclaimable))
    console = Console(highlight=False)
    console.print(table)
    console.print(f"total {human_size(report.total)}, reclaimable {human_size(report.reclaimable)}  ({root})",
                  markup=False)  # a root path may hold [brackets]
    return 0
