"""`layerbuild` command line: argument parsing, dispatch to one module per verb, the error funnel."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from layerbuild.errors import LayerbuildError

Verb = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit code 2 and no traceback (as it does), but to
    our stderr stream so tests can capture it."""


# One module per verb, `layerbuild.cli.<verb>_cmd`, in the order `--help` lists them.
VERBS = ("build", "parse", "import", "df", "prune", "fsck", "images", "inspect", "history", "tag", "rmi", "run",
         "ps", "logs", "stop", "rm", "bundle", "save", "load", "push", "pull", "login", "logout", "network", "exec",
         "compose", "bench", "machine", "serve", "daemon")


def _named_verb(argv: Sequence[str]) -> str | None:
    """The verb `argv` runs, if only `--root` comes before it (else None: every verb is needed)."""
    args = iter(argv)
    for arg in args:
        if arg == "--root":
            next(args, None)
        elif not arg.startswith("--root="):
            return arg if arg in VERBS else None
    return None


# Parsers made ahead by `prebuild`, by the verb they were made for.
_PREBUILT: dict[str, tuple[argparse.ArgumentParser, dict[str, Verb]]] = {}


def prebuild(verbs: Sequence[str]) -> None:
    """Make the parser of each of `verbs` now, for `build_parser` to hand out: what the daemon does
    before it forks, so its children do not build one each (a parser depends on nothing of the
    caller: no environment, terminal or directory is read while it is made)."""
    for verb in verbs:
        _PREBUILT[verb] = build_parser([verb])


def build_parser(argv: Sequence[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, Verb]]:
    """The parser and each verb's function; given the `argv` to parse, only the verb it names (building
    all the sub-parsers is most of the CLI's start-up, which a no-op build is mostly made of)."""
    import importlib

    verb = _named_verb(argv) if argv is not None else None
    if verb is not None and verb in _PREBUILT:
        return _PREBUILT.pop(verb)  # used once: a second command in this process gets a fresh one
    parser = _Parser(prog="layerbuild", description="Build container images with layered caching.")
    parser.add_argument("--root", metavar="DIR", help="store root (default: $LAYERBUILD_ROOT, "
                        "else $XDG_DATA_HOME/layerbuild)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-H", "--host", metavar="ssh://USER@HOST[:PORT]",
                        help="run the command on that build host (default: $LAYERBUILD_HOST)")
    parser.add_argument("--machine", metavar="NAME", help="run the command on that machine (`layerbuild machine`)")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    verbs: dict[str, Verb] = {}
    for name in (verb,) if verb is not None else VERBS:
        registered, run = importlib.import_module(f"layerbuild.cli.{name}_cmd").register(sub)
        assert registered == name, (registered, name)
        verbs[name] = run
        # `--root` is global, but `layerbuild build --root DIR .` should work too.
        sub.choices[name].add_argument("--root", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser, verbs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit code (0 ok, 1 failed, 2 usage or Dockerfile error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    host_options: dict[str, str] = {}
    if any(a in ("-H", "--host", "--machine") or a.startswith(("--host=", "--machine=")) for a in argv):
        try:  # the remote module only for a command that may name a host: not on a no-op's start-up
            from layerbuild.cli.remote import take_host_options

            host_options, argv = take_host_options(argv)
        except LayerbuildError as exc:
            print(f"error: {exc.render()}", file=sys.stderr)
            return exc.exit_code
    parser, verbs = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    except LayerbuildError as exc:  # a docker flag that is not supported yet (cli.common.not_yet)
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    if args.version:
        from layerbuild import __version__

        print(f"layerbuild {__version__}")
        return 0
    if args.verb is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if host_options or os.environ.get("LAYERBUILD_HOST") or os.environ.get("LAYERBUILD_MACHINE"):
            from layerbuild.cli import remote

            chosen = remote.selected(host_options, args.verb)
            if chosen is not None:
                return remote.run(args, argv, chosen[0], chosen[1], parser)
        return verbs[args.verb](args)
    except LayerbuildError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:  # the system said no (permissions, a full disk, a vanished file): not a bug
        if os.environ.get("LAYERBUILD_DEBUG"):
            raise
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: say so plainly; the traceback only when asked for
        if os.environ.get("LAYERBUILD_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n"
              "this is a bug in layerbuild; run again with LAYERBUILD_DEBUG=1 for the traceback",
              file=sys.stderr)
        return 1


def _os_error(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{text}: {' -> '.join(repr(n) for n in names)}" if names else text


def entry(then: Callable[[], None] | None = None) -> None:
    """Console-script entry point; `then` runs after the command (before the exit), whatever its code."""
    code = main()
    if then is not None:
        then()
    _exit(code)


def _exit(code: int) -> None:
    """End the process with `code`. When the command has left nothing to do at exit (no thread but
    this one, no atexit callback, no tracer or profiler such as coverage or pyinstrument) and its
    output is flushed, the interpreter's teardown (freeing every module and object, a tenth of a
    no-op build's time) is skipped: the project closes its files and stores itself. Otherwise, and
    for a `LAYERBUILD_DEBUG` run, the ordinary exit."""
    import atexit
    import threading

    callbacks = getattr(atexit, "_ncallbacks", None)
    if (threading.active_count() == 1 and callbacks is not None and callbacks() == 0 and sys.gettrace() is None
            and sys.getprofile() is None and not os.environ.get("LAYERBUILD_DEBUG")):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # the ordinary exit reports it, as it always did
        else:
            os._exit(code)
    sys.exit(code)
