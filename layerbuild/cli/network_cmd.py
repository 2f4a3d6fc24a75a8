"""`layerbuild network create|ls|rm`: project networks (a bridge in a network namespace of its own)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from layerbuild.cli.common import open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("network", help="manage networks (a bridge in a namespace of its own; needs root)")
    cmds = p.add_subparsers(dest="network_cmd", metavar="COMMAND")
    c = cmds.add_parser("create", help="create a network")
    c.add_argument("--subnet", metavar="CIDR", help="its IPv4 subnet (default: the next free /24 of 10.89.0.0/16)")
    c.add_argument("name", metavar="NAME")
    ls = cmds.add_parser("ls", help="list networks")
    ls.add_argument("--json", action="store_true", help="print a JSON list (docker's network inspect fields)")
    rm = cmds.add_parser("rm", help="remove networks")
    rm.add_argument("names", nargs="+", metavar="NAME")
    return "network", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.errors import UsageError
    from layerbuild.runtime import bridge

    with open_store(args) as store:
        root = store.root
    if args.network_cmd == "create":
        print(bridge.create(root, args.name, subnet=args.subnet).id)
    elif args.network_cmd == "ls":
        nets = bridge.list_all(root)
        if args.json:
            json.dump([n.to_json() for n in nets], sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        from layerbuild.cli.images_cmd import columns

        rows = [["NETWORK ID", "NAME", "SUBNET", "CONTAINERS"]]
        rows += [[n.id[:12], n.name, n.subnet, str(len(bridge.members(n)))] for n in nets]
        sys.stdout.write(columns(rows))
    elif args.network_cmd == "rm":
        for name in args.names:
            bridge.remove(root, name)
            print(name)
    else:
        raise UsageError("network needs a command", hint="use network create, ls or rm")
    return 0
