"""`layerbuild compose [-f FILE]... [-p NAME] [--profile P]... [--env-file F] config|build`."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import not_yet
from layerbuild.errors import LayerbuildError, UsageError

if TYPE_CHECKING:
    from layerbuild.compose import Project


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("compose", help="define and build multi-service applications (compose.yaml)")
    p.add_argument("-f", "--file", action="append", default=[], metavar="FILE",
                   help="a compose file (repeatable; - for standard input)")
    p.add_argument("-p", "--project-name", metavar="NAME", help="the project's name")
    p.add_argument("--profile", action="append", default=[], metavar="PROFILE", help="enable a profile")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="variables for interpolation (default: the project's .env)")
    cmds = p.add_subparsers(dest="compose_cmd", metavar="COMMAND")
    c = cmds.add_parser("config", help="print the resolved model")
    c.add_argument("selected", nargs="*", metavar="SERVICE", help="only these services (and what they depend on)")
    c.add_argument("--format", choices=("yaml", "json"), default="yaml")
    c.add_argument("--services", action="store_true", help="print the services' names")
    c.add_argument("--images", action="store_true", help="print the images the services use")
    c.add_argument("--profiles", action="store_true", help="print the profiles the services name")
    c.add_argument("-q", "--quiet", action="store_true", help="only check the model")
    c.add_argument("-o", "--output", metavar="FILE", help="write the model to FILE")
    b = cmds.add_parser("build", help="build the services' images")
    b.add_argument("services", nargs="*", metavar="SERVICE")
    b.add_argument("--no-cache", action="store_true")
    b.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    b.add_argument("--progress", choices=("auto", "tty", "plain", "json", "quiet"), default="auto")
    b.add_argument("-q", "--quiet", action="store_true")
    b.add_argument("--jobs", type=int, default=0, metavar="N", help="stages built at once per service")
    not_yet(b, "compose build", {("--pull",): (False, "run compose pull first"),
                                 ("--push",): (False, "run compose push after the build")})
    u = cmds.add_parser("up", help="create and start the services")
    u.add_argument("services", nargs="*", metavar="SERVICE")
    u.add_argument("-d", "--detach", action="store_true", help="return once the services are started")
    u.add_argument("--build", action="store_true", help="build the images first")
    u.add_argument("--wait", action="store_true", help="wait until the services run and are healthy (implies -d)")
    u.add_argument("--wait-timeout", type=float, metavar="SECS", help="give up waiting after SECS")
    u.add_argument("--force-recreate", action="store_true", help="recreate the containers even if unchanged")
    u.add_argument("--scale", action="append", default=[], metavar="SERVICE=NUM",
                   help="run NUM containers of SERVICE (overrides scale: and deploy.replicas)")
    d = cmds.add_parser("down", help="stop and remove the containers, networks (and volumes, images)")
    d.add_argument("-v", "--volumes", action="store_true", help="remove the named volumes too")
    d.add_argument("--rmi", choices=("local", "all"), help="remove images: local (built ones) or all")
    d.add_argument("-t", "--timeout", type=float, metavar="SECS", help="grace period before SIGKILL")
    for verb, text in (("stop", "stop the services"), ("start", "start the stopped services"),
                       ("restart", "restart the services")):
        x = cmds.add_parser(verb, help=text)
        x.add_argument("services", nargs="*", metavar="SERVICE")
        if verb != "start":
            x.add_argument("-t", "--timeout", type=float, metavar="SECS", help="grace period before SIGKILL")
    ps = cmds.add_parser("ps", help="list the project's containers")
    ps.add_argument("services", nargs="*", metavar="SERVICE")
    ps.add_argument("-a", "--all", action="store_true", help="show stopped containers too")
    ps.add_argument("--json", dest="json", action="store_true",
                    help="print docker compose's JSON list (Name, Service, State, Health, ExitCode, Publishers)")
    ps.add_argument("--format", choices=("table", "json"), default="table")
    lg = cmds.add_parser("logs", help="print the services' output, prefixed with their names")
    lg.add_argument("services", nargs="*", metavar="SERVICE")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing until the containers end")
    lg.add_argument("--no-color", action="store_true", help="no colours")
    lg.add_argument("--no-log-prefix", action="store_true", help="no name prefix")
    r = cmds.add_parser("run", help="run a one-off command in a new container of a service")
    r.add_argument("--rm", dest="remove", action="store_true", help="remove the container when it exits")
    r.add_argument("--no-deps", action="store_true", help="do not start the services it depends on")
    r.add_argument("service", metavar="SERVICE")
    r.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    e = cmds.add_parser("exec", help="run a command in a service's running container")
    e.add_argument("-e", "--env", action="append", default=[], metavar="K=V")
    e.add_argument("-u", "--user")
    e.add_argument("-w", "--workdir")
    e.add_argument("-T", "--no-TTY", action="store_true", help="no pseudo-terminal (by default one is allocated when stdout is a terminal)")
    e.add_argument("--index", type=int, default=1, metavar="N", help="the container of the service (default 1)")
    e.add_argument("service", metavar="SERVICE")
    e.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    pl = cmds.add_parser("pull", help="pull the services' images")
    pl.add_argument("--ignore-buildable", action="store_true", help="skip the services that have a build section")
    pl.add_argument("--ignore-pull-failures", action="store_true", help="pull what can be pulled, warn of the rest")
    pl.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    pl.add_argument("services", nargs="*", metavar="SERVICE")
    ps_ = cmds.add_parser("push", help="push the services' built images")
    ps_.add_argument("--ignore-push-failures", action="store_true", help="push what can be pushed, warn of the rest")
    ps_.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    ps_.add_argument("services", nargs="*", metavar="SERVICE")
    return "compose", run


def _project(args: argparse.Namespace, services: tuple[str, ...] = ()) -> Project:
    from layerbuild.compose import Options, load_project

    return load_project(Options(files=tuple(args.file), project_name=args.project_name,
                                profiles=tuple(args.profile), env_files=tuple(args.env_file), services=services))


def run(args: argparse.Namespace) -> int:
    """The compose verbs; a failure exits 1, as every docker compose error does."""
    try:
        if args.compose_cmd is None:
            raise UsageError("compose needs a command", hint="use compose config or compose build")
        if args.compose_cmd == "config":
            return _config(args)
        if args.compose_cmd == "build":
            return _build(args)
        from layerbuild.cli import compose_run

        return int(getattr(compose_run, args.compose_cmd)(args, _project(args)))
    except LayerbuildError as exc:
        exc.exit_code = 1
        raise


def _config(args: argparse.Namespace) -> int:
    from layerbuild.compose.render import to_json, to_yaml

    project = _project(args)
    for name in args.selected:
        if name not in project.services:
            raise UsageError(f"no such service: {name}", hint=f"the project has {', '.join(project.service_names())}")
    if args.selected:
        project = project.with_services(args.selected)
    if args.quiet:
        return 0
    if args.services:
        text = "".join(f"{n}\n" for n in project.service_names())
    elif args.images:
        text = "".join(f"{project.image_of(n)}\n" for n in project.service_names())
    elif args.profiles:
        text = "".join(f"{p}\n" for p in sorted({p for s in project.services.values() for p in s.get("profiles", [])}))
    else:
        model = project.to_dict()
        text = to_json(model) if args.format == "json" else to_yaml(model)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _build(args: argparse.Namespace) -> int:
    from layerbuild.cli.build_cmd import _build_args
    from layerbuild.cli.progress import summary_line
    from layerbuild.compose.build import build_services, plan

    project = _project(args, tuple(args.services))
    warn = lambda message: print(f"warning: {message}", file=sys.stderr)  # noqa: E731
    builds = plan(project, args.services, _build_args(args.build_arg), warn=warn)
    if not builds:
        print("no service to build (none has build:)", file=sys.stderr)
        return 0
    lock = threading.Lock()
    mode = "quiet" if args.quiet else args.progress
    on_event = None if mode == "quiet" else _printer(mode, lock)
    results = build_services(builds, root=args.root, no_cache=args.no_cache, jobs=args.jobs, on_event=on_event)
    for b in builds:
        if mode != "json":
            print(f"{b.service}  {summary_line(results[b.service])}", file=sys.stderr)
    return 0


def _printer(mode: str, lock: threading.Lock) -> Any:
    """Events of every service, one line each, prefixed with the service's name (as docker compose)."""
    import io
    import json

    from layerbuild.cli.progress import PlainProgress

    def on_event(service: str, event: Any) -> None:
        with lock:
            if mode == "json":
                sys.stdout.write(json.dumps({"service": service, **event.to_json()}, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                return
            if event.type == "build.finished":
                return
            buf = io.StringIO()
            PlainProgress(buf)(event)
            for line in buf.getvalue().splitlines():
                print(f"{service}  | {line}", file=sys.stderr)
            sys.stderr.flush()

    return on_event
