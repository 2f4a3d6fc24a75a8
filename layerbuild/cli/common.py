"""Helpers shared by the CLI verbs: opening the store, reading and printing sizes."""

from __future__ import annotations

import argparse
import re

from layerbuild.errors import UsageError

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.store import Store

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def open_store(args: argparse.Namespace) -> Store:
    """The store at --root, else $LAYERBUILD_ROOT, else the XDG data directory."""
    from layerbuild.store import Store, resolve_root

    return Store.open(resolve_root(args.root))


def parse_size(text: str) -> int:
    """`512MB`, `10g`, `1.5GiB`, `2048` → bytes. Units are powers of 1024, as docker's are."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise UsageError(f"invalid size {text!r}", hint="write a number with an optional unit: 500MB, 10GB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def not_yet(parser: argparse.ArgumentParser, verb: str, flags: dict[tuple[str, ...], tuple[bool, str]]) -> None:
    """Docker flags this verb does not have yet: each is accepted by the parser (so its value is not
    taken for the context or the image) and refused by name, saying when it comes.

    `flags` maps the flag's spellings to (whether it takes a value, when it comes)."""
    for names, (takes_value, when) in flags.items():
        shown = "/".join(names)

        class Refuse(argparse.Action):
            def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                         option_string: str | None = None, shown: str = shown, when: str = when) -> None:
                raise UsageError(f"`{verb} {shown}` is not supported yet", hint=when)

        parser.add_argument(*names, action=Refuse, nargs=None if takes_value else 0, help=argparse.SUPPRESS)

