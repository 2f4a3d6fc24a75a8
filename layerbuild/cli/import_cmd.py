"""`layerbuild import ROOTFS.tar NAME[:TAG]`: a one-layer base image from a rootfs tarball."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store
from layerbuild.errors import UsageError

if TYPE_CHECKING:
    pass


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("import", help="make an image from a rootfs tarball (plain, gzip or zstd; - for stdin)")
    p.add_argument("tarball", metavar="ROOTFS.tar")
    p.add_argument("name", metavar="NAME[:TAG]", nargs="?", help="tag the image (docker: optional)")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                        "ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR")
    p.add_argument("-m", "--message", default="", help="the history comment of the image's layer")
    return "import", run


def _unpack(store: Any, diff_id: str) -> None:
    """Unpack the layer where RUN steps and containers read it, as `docker import` does into its
    graph driver: the first build FROM the image then starts its RUN at once. Only a cache: if it
    cannot be made here, the first step that needs it makes it (and reports what is wrong)."""
    from layerbuild.errors import LayerbuildError
    from layerbuild.runtime import lower_dirs_for

    try:
        lower_dirs_for(store, [diff_id])
    except (OSError, LayerbuildError):
        pass


def run(args: argparse.Namespace) -> int:
    from layerbuild.image import import_rootfs
    from layerbuild.platforms import host_arch
    from layerbuild.worker.changes import apply_changes
    from layerbuild.worker.meta import empty_config

    changes = list(args.change)
    apply_changes(empty_config(host_arch()), changes)  # a bad --change is refused before the tarball is read

    def edit(config: Any) -> Any:
        return apply_changes(config, changes)

    with open_store(args) as store:
        if args.tarball == "-":
            result = import_rootfs(store, sys.stdin.buffer, args.name, edit=edit, message=args.message)
        else:
            try:
                src = open(args.tarball, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise UsageError(f"cannot read {args.tarball}: {exc.strerror}") from None
            with src:
                result = import_rootfs(store, src, args.name, edit=edit, message=args.message)
        _unpack(store, result.layer.diff_id)
    print(result.config)  # the image id, as docker import prints it (and `images` shows)
    return 0

