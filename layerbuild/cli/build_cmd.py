"""`layerbuild build [options] CONTEXT`: docker build's spellings, layerbuild's cache."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layerbuild.cli.common import open_store
from layerbuild.errors import UsageError

if TYPE_CHECKING:
    from layerbuild.worker.request import OutputSpec


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("context", metavar="CONTEXT")
    p.add_argument("-f", "--file", metavar="FILE", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--target", metavar="STAGE")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE[,STAGE]")
    p.add_argument("--progress", choices=("auto", "tty", "plain", "json", "quiet"), default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--report", metavar="FILE", help="write the build report (JSON) to FILE")
    p.add_argument("--jobs", type=int, default=0, metavar="N", help="stages built at once (default: CPUs)")
    p.add_argument("--network", choices=("default", "none", "host"), default="default")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=PATH")
    p.add_argument("--output", "-o", action="append", default=[], metavar="type=TYPE,dest=PATH")
    p.add_argument("--cache-from", action="append", default=[], metavar="REF")
    p.add_argument("--cache-to", action="append", default=[], metavar="REF")
    return "build", run


def _kv_list(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid {what} {text!r}", hint=f"write {what} as key=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def _build_args(items: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:  # docker: `--build-arg NAME` takes the value from the environment
            if key not in os.environ:
                continue
            value = os.environ[key]
        args[key] = value
    return args


def _outputs(items: list[str]) -> tuple[OutputSpec, ...]:
    from layerbuild.worker.request import OutputSpec

    specs = []
    for item in items:
        fields = _kv_list(item, "--output") if "=" in item else {"type": "local", "dest": item}
        kind = fields.get("type", "local")
        if kind not in ("local", "tar", "oci", "docker"):
            raise UsageError(f"unknown --output type={kind}", hint="use type=local, tar, oci or docker")
        if "dest" not in fields:
            raise UsageError(f"--output {item!r} needs dest=PATH")
        specs.append(OutputSpec(kind, fields["dest"]))
    return tuple(specs)


def _secrets(items: list[str]) -> dict[str, Path]:
    secrets = {}
    for item in items:
        fields = _kv_list(item, "--secret")
        if "id" not in fields:
            raise UsageError(f"--secret {item!r} needs id=ID")
        secrets[fields["id"]] = Path(fields.get("src") or fields.get("source") or fields["id"])
    return secrets


def run(args: argparse.Namespace) -> int:
    from layerbuild.worker.request import BuildRequest

    if args.cache_from or args.cache_to:
        raise UsageError("--cache-from/--cache-to are not supported yet", hint="the registry cache comes later")
    request = BuildRequest(
        context=Path(args.context),
        dockerfile=Path(args.file) if args.file else None,
        tags=tuple(args.tag),
        build_args=_build_args(args.build_arg),
        target=args.target,
        no_cache=args.no_cache,
        no_cache_filter=frozenset(s.strip() for f in args.no_cache_filter for s in f.split(",") if s.strip()),
        jobs=args.jobs,
        network=args.network,
        secrets=_secrets(args.secret),
        outputs=_outputs(args.output),
        source_date_epoch=int(os.environ["SOURCE_DATE_EPOCH"]) if os.environ.get("SOURCE_DATE_EPOCH") else None,
    )
    mode = "quiet" if args.quiet else args.progress
    started = time.monotonic()
    report, fp = _fast_path(args, request, started)
    if report is not None:
        _render_fast(report, mode, args)
        return 0
    import dataclasses

    return _full_build(args, dataclasses.replace(request, fingerprint=fp), mode)


def _fast_path(args: argparse.Namespace, request: Any, started: float) -> tuple[dict[str, Any] | None, str | None]:
    """A no-op build answered from the last build's record without loading the build machinery."""
    from layerbuild.store.layout import resolve_root
    from layerbuild.worker import fastpath

    return fastpath.check(request, resolve_root(args.root), started)


def _render_fast(report: dict[str, Any], mode: str, args: argparse.Namespace) -> None:
    steps = report.get("steps", [])
    summary = report["summary"]
    if mode == "json":
        for step in steps:
            print(json.dumps({"event": "step.cached", **step}, ensure_ascii=False))
        print(json.dumps({"event": "build.finished", **report}, ensure_ascii=False))
    elif mode != "quiet":
        for step in steps:
            if step["kind"] in ("copy", "exec"):
                print(f"[{step['stage']} {step['index']}] {step['instruction']}  CACHED", file=sys.stderr)
        tags = report["image"].get("tags") or []
        tag_text = f" ({', '.join(tags)})" if tags else ""
        print(f"built {report['image']['id'][:19]}{tag_text}: {summary['steps']} steps, {summary['cached']} cached, "
              f"{summary['executed']} executed, hit rate {summary['hit_rate']:.0%}, {summary['duration_s']:.2f}s",
              file=sys.stderr)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if args.quiet:
        print(report["image"]["id"])


def _full_build(args: argparse.Namespace, request: Any, mode: str) -> int:
    from layerbuild.cli.progress import make_progress
    from layerbuild.worker.build import run_build

    progress = make_progress(mode)
    try:
        with open_store(args) as store:
            result = run_build(request, store, on_event=progress)
    finally:
        close = getattr(progress, "close", None)
        if close is not None:
            close()
    if args.report:
        Path(args.report).write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    if args.quiet:
        print(result.image.id)
    return 0
