"""The running verbs of `layerbuild compose`: up, down, stop, start, restart, ps, logs, run, exec, pull, push."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store

if TYPE_CHECKING:
    from layerbuild.compose import Project

# docker compose's colours for the log prefixes, in its order
COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")


def _say(text: str) -> None:
    print(f" {text}", file=sys.stderr, flush=True)


def up(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle

    if args.build:
        from layerbuild.cli.compose_cmd import _build

        build_args = argparse.Namespace(**{**vars(args), "services": list(args.services), "no_cache": False,
                                           "build_arg": [], "progress": "quiet", "quiet": True, "jobs": 0})
        _build(build_args)
    else:
        _build_missing(args, project)
    with open_store(args) as store:
        started = lifecycle.up(store, project, args.services, force_recreate=args.force_recreate,
                               wait=args.wait, wait_timeout=args.wait_timeout, scale=_scale(args.scale), say=_say)
    if args.detach or args.wait:
        return 0
    # attached: follow the logs until the containers end; Ctrl-C stops them, as docker compose does
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _follow(started, True, colour=sys.stdout.isatty(), prefix=True)
    except KeyboardInterrupt:
        _say("Gracefully stopping... (press Ctrl+C again to force)")
        lifecycle.stop(args_root(args), project, args.services, say=_say)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def _scale(items: list[str]) -> dict[str, int]:
    """`--scale SERVICE=NUM`, repeatable."""
    from layerbuild.errors import UsageError

    out = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit():
            raise UsageError(f"invalid --scale {item!r}", hint="write --scale SERVICE=NUM")
        out[name] = int(count)
    return out


def _build_missing(args: argparse.Namespace, project: Project) -> None:
    """`up` builds the images of services with `build:` that are not in the store yet."""
    from layerbuild.image.store_io import ImageNotFoundError, resolve_image

    missing = []
    with open_store(args) as store:
        for name in project.service_names():
            if project.services[name].get("build") is not None:
                try:
                    resolve_image(store, project.image_of(name))
                except ImageNotFoundError:
                    missing.append(name)
    if missing:
        from layerbuild.cli.compose_cmd import _build

        _build(argparse.Namespace(**{**vars(args), "services": missing, "no_cache": False, "build_arg": [],
                                     "progress": "quiet", "quiet": True, "jobs": 0}))


def args_root(args: argparse.Namespace) -> Any:
    with open_store(args) as store:
        return store.root


def down(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle

    with open_store(args) as store:
        lifecycle.down(store, project, volumes=args.volumes, rmi=args.rmi, timeout=args.timeout, say=_say)
    return 0


def stop(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle

    lifecycle.stop(args_root(args), project, args.services, timeout=args.timeout, say=_say)
    return 0


def start(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle

    with open_store(args) as store:
        lifecycle.start(store, project, args.services, say=_say)
    return 0


def restart(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle

    lifecycle.stop(args_root(args), project, args.services, timeout=args.timeout, say=_say)
    with open_store(args) as store:
        lifecycle.start(store, project, args.services, say=_say)
    return 0


def ps(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.cli.images_cmd import columns
    from layerbuild.compose import lifecycle

    entries = lifecycle.ps(args_root(args), project, args.services, all_=args.all)
    if args.json or args.format == "json":
        json.dump(entries, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    rows = [["NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS"]]
    from layerbuild.cli.images_cmd import since

    for e in entries:
        command = e["Command"] if len(e["Command"]) <= 22 else e["Command"][:19] + "…"
        ports = ", ".join(f"{p['URL']}:{p['PublishedPort']}->{p['TargetPort']}/{p['Protocol']}"
                          for p in e["Publishers"])
        rows.append([e["Name"], e["Image"], f'"{command}"', e["Service"], since(e["Created"]), e["Status"], ports])
    sys.stdout.write(columns(rows))
    return 0


def logs(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import services as svcs

    found = [c for c in svcs.project_containers(args_root(args), project.name)
             if not args.services or svcs.service_of(c) in args.services]
    _follow(found, args.follow, colour=sys.stdout.isatty() and not args.no_color, prefix=not args.no_log_prefix)
    return 0


def _follow(found: list[Any], follow: bool, *, colour: bool, prefix: bool) -> None:
    """Each container's log, line by line as they come, `name  | ` in front (a colour per container)."""
    from layerbuild.runtime.runner import follow_log

    width = max((len(c.name) for c in found), default=0)
    lock = threading.Lock()
    out = sys.stdout.buffer

    def pump(index: int, c: Any) -> None:
        head = f"{c.name.ljust(width)}  | ".encode() if prefix else b""
        if colour and prefix:
            head = f"\x1b[{COLOURS[index % len(COLOURS)]}m".encode() + head + b"\x1b[0m"
        rest = b""
        for chunk in follow_log(c, follow):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            with lock:
                out.write(b"".join(head + line + b"\n" for line in lines))
                out.flush()
        if rest:
            with lock:
                out.write(head + rest + b"\n")
                out.flush()

    threads = [threading.Thread(target=pump, args=(i, c), daemon=True) for i, c in enumerate(found)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)


def run(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle

    _build_missing(args, project)
    with open_store(args) as store:
        return lifecycle.run_oneoff(store, project, args.service, args.command, remove=args.remove,
                                    deps=not args.no_deps, say=_say)


def exec(args: argparse.Namespace, project: Project) -> int:
    from layerbuild.compose import lifecycle
    from layerbuild.runtime.enter import exec_in

    c = lifecycle.service_container(args_root(args), project, args.service, args.index)
    tty = not args.no_TTY and sys.stdout.isatty()  # docker compose exec: a pty unless -T
    return exec_in(c, args.command, env=args.env, user=args.user, workdir=args.workdir, tty=tty,
                   forward_signals=True)


def pull(args: argparse.Namespace, project: Project) -> int:
    """docker compose pull: every service that names an image; a service that can be built and
    whose image cannot be pulled is only told to be built (as docker compose does), a failure of any
    other stops the pull with exit 1 (`--ignore-pull-failures`: a warning); `--ignore-buildable`
    leaves the buildable ones alone."""
    from layerbuild.errors import LayerbuildError
    from layerbuild.reference import parse_reference
    from layerbuild.registry.client import RegistryClient
    from layerbuild.registry.pull import pull as pull_image

    say = (lambda text: None) if args.quiet else _say
    names = args.services or project.service_names()
    must_build: list[str] = []
    with open_store(args) as store, RegistryClient() as client:
        for name in names:
            svc = project.services[name]
            image, buildable = svc.get("image"), svc.get("build") is not None
            if not image or (buildable and args.ignore_buildable):
                say(f"{name} Skipped")
                continue
            say(f"{name} Pulling")
            try:
                pull_image(store, parse_reference(str(image)), client=client)
            except LayerbuildError as exc:
                if buildable:
                    must_build.append(name)
                    say(f"{name} Warning {exc.message}")
                    continue
                if not args.ignore_pull_failures:
                    raise
                print(f"warning: {name}: {exc.message}", file=sys.stderr)
                continue
            say(f"{name} Pulled")
    if must_build:
        print("WARNING: Some service image(s) must be built from source by running:\n"
              f"    layerbuild compose build {' '.join(must_build)}", file=sys.stderr)
    return 0


def push(args: argparse.Namespace, project: Project) -> int:
    """docker compose push: the images of the services that are built and name an image; the rest
    are skipped. A failure exits 1 (`--ignore-push-failures`: a warning)."""
    from layerbuild.errors import LayerbuildError
    from layerbuild.registry.push import push as push_image

    say = (lambda text: None) if args.quiet else _say
    names = args.services or project.service_names()
    with open_store(args) as store:
        for name in names:
            svc = project.services[name]
            if not svc.get("image") or svc.get("build") is None:
                say(f"{name} Skipped")
                continue
            say(f"Pushing {name}: {svc['image']}")
            try:
                push_image(store, str(svc["image"]))
            except LayerbuildError as exc:
                if not args.ignore_push_failures:
                    raise
                print(f"warning: {name}: {exc.message}", file=sys.stderr)
                continue
            say(f"{name} Pushed")
    return 0
