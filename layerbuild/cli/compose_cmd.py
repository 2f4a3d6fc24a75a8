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
    not_yet(b, "compose build", {("--pull",): (False, "it comes with registry pulls in compose"),
                                 ("--push",): (False, "it comes with registry pushes in compose")})
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
        return _build(args)
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
