"""`layerbuild run`: start a container from an image (docker's options, exit codes 125/126/127)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from layerbuild.cli.common import not_yet, open_store
from layerbuild.errors import LayerbuildError, UsageError

# Exit code when layerbuild itself failed, so it is not mistaken for the container's own status.
FAILED = 125


def register(sub: Any) -> tuple[str, Any]:
    # -h is the hostname, as in docker; --help stays
    p = sub.add_parser("run", help="run a command in a new container", add_help=False,
                       usage="%(prog)s [OPTIONS] IMAGE [COMMAND] [ARG...]")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("--rm", dest="remove", action="store_true", help="remove the container when it exits")
    p.add_argument("-d", "--detach", action="store_true", help="run in the background and print the id")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin attached")
    p.add_argument("-t", "--tty", action="store_true", help="use the terminal (needs one)")
    p.add_argument("--name", help="name the container")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("-u", "--user", help="user (name|uid[:group|gid])")
    p.add_argument("--network", action="append", default=[], metavar="NETWORK",
                   help="default: own network with outbound access, not the host's loopback; "
                        "none: loopback only; host: the host's network; or the name of a network "
                        "(`layerbuild network create`; repeatable)")
    p.add_argument("--network-alias", action="append", default=[], metavar="ALIAS",
                   help="another name the container answers to on its networks")
    p.add_argument("-p", "--publish", action="append", default=[], metavar="[IP:]HOST:CONTAINER",
                   help="publish a container's TCP port on the host (default address 127.0.0.1; needs a network)")
    p.add_argument("-v", "--volume", action="append", default=[], metavar="SRC:DST[:ro]", help="bind mount")
    p.add_argument("--entrypoint", help="override the image's entrypoint")
    p.add_argument("--security-opt", action="append", default=[], metavar="OPT",
                   help="seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false]")
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit (e.g. 64m, 1g)")
    p.add_argument("--memory-swap", metavar="BYTES", help="memory plus swap limit (-1: unlimited swap)")
    p.add_argument("--cpus", metavar="N", help="number of CPUs (e.g. 1.5)")
    p.add_argument("--pids-limit", metavar="N", help="process limit (-1: unlimited; default 2048)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read environment variables from FILE (K=V lines, # comments, K alone copies yours)")
    p.add_argument("-h", "--hostname", dest="hostname", help="the container's hostname")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a line to /etc/hosts (HOST:IP, HOST=IP, IPv6 in brackets or not; "
                        "HOST:host-gateway is the host's address)")
    not_yet(p, "run", {
        ("-P", "--publish-all"): (False, "publish the ports one by one with -p"),
        ("--privileged",): (False, "not offered: RUN --security=insecure with build --allow is the one escape hatch"),
    })
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="[COMMAND [ARG...]]",
                   help="what to run (default: the image's ENTRYPOINT and CMD)")
    return "run", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.runtime.limits import parse_limits
    from layerbuild.runtime.runner import RunOptions
    from layerbuild.runtime.runner import run as run_container

    try:
        add_hosts = check_options(args)
        mode, joins = networks_of(args.network, args.network_alias)
        ports = publish_of(args.publish)
        limits = parse_limits(args.memory, args.memory_swap, args.cpus, args.pids_limit)
    except LayerbuildError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return FAILED
    try:
        env = (*env_files(args.env_file), *args.env)
    except LayerbuildError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return FAILED
    opts = RunOptions(
        image=args.image, command=tuple(args.command), name=args.name, env=env, hostname=args.hostname,
        workdir=args.workdir, user=args.user, network=mode, networks=joins, ports=ports, volumes=tuple(args.volume),
        detach=args.detach, interactive=args.interactive, tty=args.tty, remove=args.remove,
        entrypoint=None if args.entrypoint is None else ((args.entrypoint,) if args.entrypoint else ()),
        security_opt=tuple(args.security_opt),
        limits=limits, add_hosts=add_hosts,
    )
    try:
        with open_store(args) as store:
            container, code = run_container(store, opts)
    except LayerbuildError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return FAILED
    if code is None:
        print(container.id)
        return 0
    if container.end_reason:
        print(f"layerbuild: {container.end_reason}", file=sys.stderr)
    return code


def publish_of(specs: list[str]) -> tuple[Any, ...]:
    """`-p` values as `ports.Port`s (the module loads only when a port is published)."""
    if not specs:
        return ()
    from layerbuild.runtime.ports import parse_publish

    return tuple(parse_publish(p) for p in specs)


def networks_of(names: list[str], aliases: list[str]) -> tuple[Any, tuple[Any, ...]]:
    """`--network` values as (mode, project networks to join): a mode alone, or networks only."""
    modes = [n for n in names if n in ("default", "none", "host", "bridge")]
    if modes and (len(names) > 1):
        raise UsageError("--network default, none or host cannot be combined with other networks")
    if (aliases and not names) or (modes and aliases):
        raise UsageError("--network-alias needs --network NAME (a network made with `layerbuild network create`)")
    if modes:
        return ("default" if modes[0] == "bridge" else modes[0]), ()
    if not names:
        return "default", ()
    from layerbuild.runtime.bridge import Join

    return "default", tuple(Join(n, tuple(aliases)) for n in names)


# docker's rule for container names (a leading "/" aside, which docker strips).
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def env_files(paths: list[str]) -> list[str]:
    """docker's --env-file: one K=V per line, blank lines and `#` lines skipped, a bare K copies the
    caller's value (dropped if unset, as -e K does); values are taken literally, quotes included."""
    out: list[str] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise UsageError(f"cannot read --env-file {path!r}: {reason}") from None
        for number, line in enumerate(lines, 1):
            text = line.lstrip()
            if not text or text.startswith("#"):
                continue
            key = text.partition("=")[0]
            if not key or any(c.isspace() for c in key):
                raise UsageError(f"{path}:{number}: invalid variable name {key!r} in --env-file",
                                 hint="write one NAME=value per line")
            out.append(text)
    return out


def check_options(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """Refuse what docker refuses before it starts anything: a bad --name, a relative -w, a bad
    --add-host; returns the --add-host entries as (name, address)."""
    from layerbuild.runtime.network import parse_add_host

    if args.name is not None and not _NAME_RE.fullmatch(args.name):
        raise UsageError(f"invalid container name ({args.name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                         hint="a name is two or more of these characters, starting with a letter or digit")
    if args.workdir is not None and not args.workdir.startswith("/"):
        raise UsageError(f"the working directory {args.workdir!r} is invalid, it needs to be an absolute path")
    return tuple(parse_add_host(item) for item in args.add_host)
