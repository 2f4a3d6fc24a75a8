"""`layerbuild ps [-a] [--json]`: the containers, running ones only unless -a, like `docker ps`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from layerbuild.cli.common import open_store
from layerbuild.cli.images_cmd import columns, since


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show exited containers too")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list of {"id","name","image","command","status","exit_code","created"}')
    return "ps", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.runtime import containers

    with open_store(args) as store:
        root = store.root
    entries = []
    for c in containers.list_all(root):
        entry = c.to_json()
        if entry["status"] == "exited" and c.config.get("auto_remove"):
            containers.remove(c)  # run -d --rm: nobody else is there to remove it
            continue
        if args.all or entry["status"] == "running":
            entries.append((c, entry))
    if args.json:
        json.dump([e for _, e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    table = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"]]
    for c, e in entries:
        command = e["command"] if len(e["command"]) <= 22 else e["command"][:19] + "…"
        if e["status"] == "running":
            status = "Up " + since(c.started).removesuffix(" ago")
        elif e["status"] == "exited":
            code = "?" if e["exit_code"] is None else e["exit_code"]
            status = f"Exited ({code}) {since(c.finished) if c.finished else ''}".rstrip()
        else:
            status = "Created"
        table.append([c.short_id, e["image"], f'"{command}"', since(e["created"]), status, e["name"]])
    sys.stdout.write(columns(table))
    return 0
