"""`layerbuild machine create|ls|ssh|env|rm|upgrade`: build hosts reached over SSH, managed by name."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

from layerbuild.cli.common import human_size
from layerbuild.errors import UsageError


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("machine", help="manage build hosts reached over SSH")
    verbs = p.add_subparsers(dest="machine_verb", metavar="COMMAND")
    c = verbs.add_parser("create", help="set a host up and record it")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--ssh", required=True, metavar="USER@HOST[:PORT]", help="where to log in (ssh://... too)")
    c.add_argument("--identity", "-i", metavar="KEY", help="the private key to log in with")
    c.add_argument("--ssh-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an ssh -o option, remembered for the machine (repeatable)")
    c.add_argument("--no-index", action="store_true",
                   help="send the dependencies along instead of installing them from the host's package index")
    ls = verbs.add_parser("ls", help="list the machines")
    ls.add_argument("--json", action="store_true")
    s = verbs.add_parser("ssh", help="log into a machine, or run a command there")
    s.add_argument("name", metavar="NAME")
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD")
    e = verbs.add_parser("env", help="print the shell commands that point layerbuild at a machine")
    e.add_argument("name", metavar="NAME", nargs="?")
    e.add_argument("--unset", "-u", action="store_true", help="print the commands that undo it")
    r = verbs.add_parser("rm", help="forget a machine")
    r.add_argument("name", metavar="NAME", nargs="+")
    r.add_argument("--purge", action="store_true", help="also remove layerbuild and its store from the host")
    r.add_argument("-f", "--force", action="store_true", help="forget it even if the host cannot be reached")
    u = verbs.add_parser("upgrade", help="install this layerbuild version on a machine")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--no-index", action="store_true", help="send the dependencies along")
    return "machine", run


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    verb = args.machine_verb
    if verb is None:
        raise UsageError("`layerbuild machine` needs a command", hint="create, ls, ssh, env, rm or upgrade")
    return int({"create": _create, "ls": _ls, "ssh": _ssh, "env": _env, "rm": _rm, "upgrade": _upgrade}[verb](args))


def _create(args: argparse.Namespace) -> int:
    from layerbuild.remote import machines, provision
    from layerbuild.remote.ssh import parse_options, parse_target

    name = machines.check_name(args.name)
    known = machines.load()
    if name in known:
        raise UsageError(f"machine {name!r} exists already ({known[name].url})",
                         hint=f"remove it first (`layerbuild machine rm {name}`) or upgrade it")
    identity = os.path.abspath(os.path.expanduser(args.identity)) if args.identity else None
    if identity and not os.path.isfile(identity):
        raise UsageError(f"--identity {args.identity!r}: no such file")
    target = parse_target(args.ssh, identity=identity, options=parse_options(args.ssh_opt))
    _say(f"checking {target.url}")
    facts = provision.check_host(target)
    _say(f"{target.url}: Linux, Python {facts.python}, {'rootless' if facts.rootless else 'root'}")
    version = provision.install(target, use_index=not args.no_index, say=_say)
    machine = machines.Machine(name, target.url, identity, dict(target.options), version,
                               datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    known[name] = machine
    machines.save(known)
    print(f"machine {name} is ready: layerbuild {version} on {target.url}")
    print(f"point layerbuild at it: eval $(layerbuild machine env {name})")
    return 0


def _status(machine: Any) -> dict[str, Any]:
    from layerbuild.remote.client import Connection

    row = {"name": machine.name, "url": machine.url, "state": "unreachable", "version": None,
           "store_size": None, "error": None}
    try:
        with Connection(machine.target(), machine.name) as conn:
            info = conn.info()
        row.update(state="running", version=info.get("version"), store_size=info.get("store_size"))
    except Exception as exc:
        from layerbuild.errors import LayerbuildError

        if not isinstance(exc, LayerbuildError):
            raise
        row["error"] = exc.message
        if "older than" in exc.message or "newer than" in exc.message:
            row["state"] = "outdated"
    return row


def _ls(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from layerbuild.remote import machines

    known = sorted(machines.load().values(), key=lambda m: m.name)
    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(_status, known))
    active = os.environ.get("LAYERBUILD_MACHINE")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "ACTIVE", "URL", "STATE", "VERSION", "STORE")]
    for row in rows:
        size = human_size(row["store_size"]) if row["store_size"] is not None else "-"
        table.append((row["name"], "*" if row["name"] == active else "-", row["url"], row["state"],
                      row["version"] or "-", size))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("   ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def _ssh(args: argparse.Namespace) -> int:
    import subprocess

    from layerbuild.remote import machines
    from layerbuild.remote.ssh import ssh_argv

    machine = machines.get(args.name)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    interactive = not cmd and sys.stdin.isatty()
    # As ssh does: the words are joined with spaces and the host's shell reads them.
    argv = ssh_argv(machine.target(), " ".join(cmd) if cmd else None, tty=interactive)
    sys.stdout.flush()
    code = subprocess.call(argv)
    if code == 255:
        from layerbuild.remote.ssh import connection_error

        proc = subprocess.run(ssh_argv(machine.target(), "true"), capture_output=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 255:
            raise connection_error(machine.target(), proc.stderr.decode(errors="replace"))
    return code


def _env(args: argparse.Namespace) -> int:
    from layerbuild.remote import machines

    if args.unset:
        print("unset LAYERBUILD_HOST LAYERBUILD_MACHINE")
        print("# run this command to configure your shell:\n# eval $(layerbuild machine env --unset)")
        return 0
    if not args.name:
        raise UsageError("`machine env` needs a machine name", hint="layerbuild machine env NAME")
    import shlex

    machine = machines.get(args.name)
    print(f"export LAYERBUILD_HOST={shlex.quote(machine.url)}")
    print(f"export LAYERBUILD_MACHINE={shlex.quote(machine.name)}")
    print(f"# run this command to configure your shell:\n# eval $(layerbuild machine env {machine.name})")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from layerbuild.remote import machines, provision
    from layerbuild.remote.ssh import close_master

    known = machines.load()
    for name in args.name:
        machine = machines.get(name)
        if args.purge:
            try:
                status = _status(machine)
                root = None
                if status["state"] == "running":
                    from layerbuild.remote.client import Connection

                    with Connection(machine.target(), machine.name) as conn:
                        root = conn.info().get("root")
                provision.purge(machine.target(), root)
                _say(f"removed layerbuild{' and its store ' + root if root else ''} from {machine.url}")
            except Exception as exc:
                from layerbuild.errors import LayerbuildError

                if not isinstance(exc, LayerbuildError) or not args.force:
                    raise
                _say(f"warning: {exc.message}; forgetting {name} anyway")
        close_master(machine.target())
        del known[name]
        machines.save(known)
        print(f"removed machine {name}")
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    from layerbuild.remote import machines, provision

    known = machines.load()
    machine = machines.get(args.name)
    _say(f"checking {machine.url}")
    provision.check_host(machine.target())
    version = provision.install(machine.target(), use_index=not args.no_index, say=_say)
    machine.version = version
    known[machine.name] = machine
    machines.save(known)
    print(f"machine {machine.name} runs layerbuild {version}")
    return 0
