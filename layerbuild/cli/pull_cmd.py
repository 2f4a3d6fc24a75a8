"""`layerbuild pull NAME[:TAG|@DIGEST] [--platform OS/ARCH[/VARIANT]] [-q]`: an image from its registry
into the store, told as `docker pull` tells it."""

from __future__ import annotations

import argparse
from typing import Any

from layerbuild.cli.common import not_yet, open_store


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("pull", help="pull an image from a registry")
    p.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform to pull from a "
                   "multi-platform image (default: this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.add_argument("--progress", choices=("auto", "tty", "plain", "json", "quiet"), default="auto",
                   help="per-layer bars (tty), lines (plain), JSON events, or nothing")
    not_yet(p, "pull", {("-a", "--all-tags"): (False, "pull each tag by name")})
    return "pull", run


def parse_platform_arg(text: str | None) -> Any:
    from layerbuild.errors import UsageError
    from layerbuild.platforms import parse_platform

    if text is None:
        return None
    try:
        return parse_platform(text)
    except ValueError as exc:
        raise UsageError(str(exc), hint="e.g. --platform linux/amd64 or linux/arm/v7") from None


def run(args: argparse.Namespace) -> int:
    from layerbuild.cli.progress import make_pull_progress
    from layerbuild.reference import familiar, parse_reference
    from layerbuild.registry.client import RegistryClient
    from layerbuild.registry.pull import describe, pull

    given = parse_reference(args.image, default_tag=False)
    ref = parse_reference(args.image)
    platform = parse_platform_arg(args.platform)
    progress = make_pull_progress("quiet" if args.quiet else args.progress)
    if given.tag is None and given.digest is None:
        progress.line("Using default tag: latest")
    progress.line(describe(ref))
    try:
        with open_store(args) as store, RegistryClient() as client:
            result = pull(store, ref, client=client, platform=platform, on_event=progress)
    finally:
        progress.close()
    shown = familiar(str(ref))
    progress.line(f"Digest: {result.digest}")
    status = "Downloaded newer image" if result.updated else "Image is up to date"
    progress.line(f"Status: {status} for {shown}")
    if args.progress != "json" or args.quiet:
        print(str(ref), flush=True)
    return 0
