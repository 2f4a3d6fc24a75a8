"""`layerbuild bundle IMAGE DIR [CMD...]`: write an OCI runtime bundle that crun or runc can run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from layerbuild.cli.common import open_store
from layerbuild.errors import UsageError


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("bundle", help="write an OCI runtime bundle (config.json + rootfs/) of an image")
    p.add_argument("--devices", action="store_true", help="write the image's device nodes too (left out by default)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD", help="replaces the image's Cmd")
    return "bundle", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import resolve_image
    from layerbuild.runtime.bundle import write_bundle

    dest = Path(args.dir)
    _check_dest(dest)
    with open_store(args) as store:
        image = resolve_image(store, args.image)
        skipped: list[str] = []
        path = write_bundle(store, image, dest, args.command, devices=args.devices, skipped=skipped)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"note: left out {len(skipped)} device node(s) of the image: {shown} (--devices writes them)",
              file=sys.stderr)
    print(path)
    return 0


def _check_dest(dest: Path) -> None:
    """A bundle goes into a new or empty directory, or one that holds nothing but an empty rootfs/."""
    if not dest.exists():
        if dest.parent.exists() and not dest.parent.is_dir():
            raise UsageError(f"cannot make the bundle directory {str(dest)!r}: {str(dest.parent)!r} is not a "
                             "directory")
        return
    if not dest.is_dir():
        raise UsageError(f"{str(dest)!r} exists and is not a directory", hint="give a new or empty directory")
    if (dest / "config.json").exists():
        raise UsageError(f"{str(dest)!r} already holds a bundle (config.json)", hint="give a new or empty directory")
