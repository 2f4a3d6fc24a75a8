"""`layerbuild parse [--json] DOCKERFILE`: show how a Dockerfile is understood."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layerbuild.parser import Dockerfile, Instruction

_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(text: str) -> str:
    """`text` for the terminal: bytes that are not UTF-8 as `\\xNN`."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("parse", help="parse a Dockerfile and print its instructions")
    p.add_argument("--json", action="store_true", help="print the instructions as JSON (see DESIGN.md)")
    p.add_argument("dockerfile", metavar="DOCKERFILE")
    return "parse", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.instructions import parse_stages
    from layerbuild.parser import parse_file

    dockerfile = parse_file(args.dockerfile)
    if args.json:
        # The parser's answer only, as the official parser gives it (DESIGN.md contract).
        text = json.dumps(dockerfile.to_json(), ensure_ascii=False, indent=2)
        # Bytes that are not UTF-8 are kept as lone surrogates, which no UTF-8 stream can write;
        # as JSON escapes (`\udcff`) they print anywhere and read back as the same strings.
        sys.stdout.write(_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")
        return 0
    render(dockerfile)
    # The table shows what was written; a build also needs the instructions to make sense
    # (known keywords, flags they take, stages), so check that too and fail like a build would.
    parse_stages(dockerfile)
    return 0


def _args_text(node: Instruction) -> str:
    target = node.inner if node.inner is not None else node
    if target.json:
        return json.dumps(list(target.value), ensure_ascii=False)
    return " ".join(target.value) if target.cmd not in ("env", "label") else " ".join(
        f"{k}={v}" for k, v in zip(target.value[::2], target.value[1::2])
    )


def render(dockerfile: Dockerfile) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=False)
    title = dockerfile.filename
    if dockerfile.directives:
        title += "  (" + ", ".join(f"{k}={v}" for k, v in dockerfile.directives.items()) + ")"
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("lines", justify="right", style="dim", no_wrap=True)
    table.add_column("instruction", style="bold cyan", no_wrap=True)
    table.add_column("flags", style="magenta")
    table.add_column("arguments")
    for node in dockerfile.instructions:
        lines = str(node.start_line) if node.start_line == node.end_line else f"{node.start_line}-{node.end_line}"
        keyword = node.cmd.upper() + (f" {node.inner.cmd.upper()}" if node.inner is not None else "")
        flags = list(node.flags) + (list(node.inner.flags) if node.inner is not None else [])
        arguments = Text(_shown(_args_text(node)))
        heredocs = node.heredocs or (node.inner.heredocs if node.inner is not None else ())
        for doc in heredocs:
            arguments.append(_shown("\n" + doc.content + doc.name), style="green")
        # Text, never markup: a Dockerfile's `[...]` must print as it is
        table.add_row(lines, Text(_shown(keyword)), Text(_shown(" ".join(flags))), arguments)
    console.print(table)
    for warning in dockerfile.warnings:
        console.print(Text.assemble(("warning:", "yellow"), " ", _shown(warning)))
    stages = sum(1 for n in dockerfile.instructions if n.cmd == "from")
    console.print(f"[dim]{len(dockerfile.instructions)} instructions, {stages} stage(s)[/]")
