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


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Verb]]:
    from layerbuild.cli import build_cmd, df_cmd, fsck_cmd, history_cmd, images_cmd, import_cmd, inspect_cmd, parse_cmd, prune_cmd, rmi_cmd, tag_cmd, run_cmd, ps_cmd, logs_cmd, stop_cmd, rm_cmd, bundle_cmd, save_cmd, load_cmd  # noqa: I001

    parser = _Parser(prog="layerbuild", description="Build container images with layered caching.")
    parser.add_argument("--root", metavar="DIR", help="store root (default: $LAYERBUILD_ROOT, "
                        "else $XDG_DATA_HOME/layerbuild)")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    verbs: dict[str, Verb] = {}
    for module in (build_cmd, parse_cmd, import_cmd, df_cmd, prune_cmd, fsck_cmd, images_cmd, inspect_cmd, history_cmd, tag_cmd, rmi_cmd, run_cmd, ps_cmd, logs_cmd, stop_cmd, rm_cmd, bundle_cmd, save_cmd, load_cmd):
        name, run = module.register(sub)
        verbs[name] = run
        # `--root` is global, but `layerbuild build --root DIR .` should work too.
        sub.choices[name].add_argument("--root", metavar="DIR", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser, verbs


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process; returns the exit code (0 ok, 1 failed, 2 usage or Dockerfile error)."""
    parser, verbs = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    if args.version:
        from layerbuild import __version__

        print(f"layerbuild {__version__}")
        return 0
    if args.verb is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return verbs[args.verb](args)
    except LayerbuildError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: say so plainly; the traceback only when asked for
        if os.environ.get("LAYERBUILD_DEBUG"):
            raise
        print(f"internal error: {type(exc).__name__}: {exc}\n"
              "this is a bug in layerbuild; run again with LAYERBUILD_DEBUG=1 for the traceback",
              file=sys.stderr)
        return 1


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
