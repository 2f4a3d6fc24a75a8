"""`layerbuild build [options] CONTEXT`: docker build's spellings over `layerbuild.build()`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from layerbuild.cli.common import not_yet, open_store
from layerbuild.errors import UsageError

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("build", help="build an image from a Dockerfile")
    p.add_argument("context", metavar="CONTEXT",
                   help="a directory, or - for standard input: a tar archive of the context (plain, gzip, "
                        "bzip2 or xz), or a Dockerfile and no context")
    p.add_argument("-f", "--file", metavar="FILE",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; - reads it from standard input; "
                        "with an archive context, the name inside the archive)")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]")
    p.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    p.add_argument("--target", metavar="STAGE")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE[,STAGE]")
    p.add_argument("--progress", choices=("auto", "tty", "plain", "json", "quiet"), default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image id")
    p.add_argument("--report", metavar="FILE", help="write the build report (JSON) to FILE")
    p.add_argument("--jobs", type=int, default=0, metavar="N", help="stages built at once (default: CPUs)")
    p.add_argument("--network", choices=("default", "none", "host"), default="default",
                   help="RUN steps' network (unless RUN --network says otherwise); default: own network "
                        "with outbound access, not the host's loopback; none: loopback only; host: the host's")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=PATH")
    p.add_argument("--output", "-o", action="append", default=[], metavar="type=TYPE,dest=PATH",
                   help="local, tar, oci or docker (dest=PATH); registry[,name=REF][,push=true] pushes the image")
    p.add_argument("--push", action="store_true", help="push the image to its -t names (--output type=registry)")
    p.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                   help="grant an entitlement: security.insecure (RUN --security=insecure), "
                        "network.host (RUN --network=host)")
    p.add_argument("-m", "--memory", metavar="BYTES", help="memory limit of each RUN step (e.g. 512m)")
    p.add_argument("--memory-swap", metavar="BYTES", help="memory plus swap of each RUN step (-1: unlimited swap)")
    p.add_argument("--cpus", metavar="N", help="CPUs of each RUN step (e.g. 1.5)")
    p.add_argument("--pids-limit", metavar="N", help="processes of each RUN step (default 2048, -1: unlimited)")
    p.add_argument("--build-context", action="append", default=[], metavar="NAME=VALUE",
                   help="a named context for FROM NAME, COPY --from=NAME, RUN --mount=from=NAME: "
                        "a directory or docker-image://REF[@DIGEST]")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY[,KEY]]",
                   help="an ssh agent for RUN --mount=type=ssh (default: $SSH_AUTH_SOCK), or key files")
    p.add_argument("--load", action="store_true",
                   help="with a build host (--host): bring the image back into the local store (a local "
                        "build puts it there anyway)")
    p.add_argument("--iidfile", metavar="FILE", help="write the image id to FILE")
    p.add_argument("--metadata-file", metavar="FILE", help="write the build's result (JSON) to FILE")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set a label on the image (after the Dockerfile's LABELs; KEY alone: empty value)")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a line to every RUN step's /etc/hosts (HOST:IP, HOST=IP, IPv6 in brackets or "
                        "not; HOST:host-gateway is the host's address)")
    p.add_argument("--cache-from", action="append", default=[], metavar="type=registry,ref=REF|type=local,src=DIR",
                   help="a cache that other builds exported, or an image built with --cache-to type=inline, "
                        "asked for the steps the store lacks (repeatable: asked in order)")
    p.add_argument("--cache-to", action="append", default=[],
                   metavar="type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd]|type=local,dest=DIR"
                           "|type=inline",
                   help="merge this build's cache records into that cache (min: the final image's steps; "
                        "max: every stage's); inline: into the image's config, for --cache-from IMAGE")
    p.add_argument("--dry-run", action="store_true",
                   help="say for each step whether it would hit the cache, and why not, without running any "
                        "or storing anything (the report has \"dry_run\": true)")
    p.add_argument("--pull", action="store_true", help="ask the registries for newer base images, and pull them")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform to build for (default: this "
                   "machine's; stages with RUN steps need one this machine runs)")
    not_yet(p, "build", {
        ("--shm-size",): (True, "RUN steps get a 64 MiB /dev/shm"),
        ("--ulimit",): (True, "RUN steps keep the limits layerbuild runs with; use --memory/--pids-limit"),
    })
    return "build", run


def _kv_list(text: str, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid {what} {text!r}", hint=f"write {what} as key=value pairs separated by commas")
        out[key.strip()] = value.strip()
    return out


def _build_contexts(items: list[str]) -> dict[str, str]:
    """`NAME=VALUE` items as name → value (the library checks the values); the last one of a name wins."""
    contexts: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"invalid --build-context {item!r}, expected NAME=VALUE",
                             hint="e.g. --build-context lib=../lib or --build-context alpine=docker-image://base:1")
        contexts[name] = value
    return contexts


def _ssh(items: list[str]) -> dict[str, list[str]]:
    """`default`, `ID` or `ID=SOCKET|KEY[,KEY]` items as id → paths (none: $SSH_AUTH_SOCK)."""
    specs: dict[str, list[str]] = {}
    for item in items:
        ident, sep, paths = item.partition("=")
        if not ident or (sep and not paths):
            raise UsageError(f"invalid --ssh {item!r}", hint="write --ssh default or --ssh ID=SOCKET|KEY[,KEY]")
        specs[ident] = [p for p in paths.split(",") if p] if sep else []
    return specs


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


def _outputs(items: list[str], stdout_file: Callable[[], str]) -> list[tuple[str, str] | dict[str, str]]:
    """`type=TYPE,dest=PATH[,devices=true]` (or a bare PATH: type=local) as (type, dest), or a mapping
    when devices= is given; the library checks them. `dest=-` (and a bare `-`, a tar as docker
    writes it) goes to the file `stdout_file()` names, which the caller then copies to standard output."""
    specs: list[tuple[str, str] | dict[str, str]] = []
    to_stdout = 0
    for item in items:
        fields = _kv_list(item, "--output") if "=" in item else (
            {"type": "tar", "dest": "-"} if item == "-" else {"type": "local", "dest": item})
        if fields.get("type") in ("registry", "image"):
            specs.append(fields)
            continue
        if "dest" not in fields:
            raise UsageError(f"--output {item!r} needs dest=PATH")
        if fields["dest"] == "-":
            if fields.get("type", "local") == "local":
                raise UsageError(f"--output {item!r}: a local export is a directory, not a stream",
                                 hint="use type=tar,dest=- (or -o -) for a tar on standard output")
            to_stdout += 1
            if to_stdout > 1:
                raise UsageError("only one --output can write to standard output")
            if sys.stdout.isatty():
                raise UsageError("refusing to write an image archive to a terminal",
                                 hint="redirect the output to a file or a pipe (e.g. -o - > image.tar)")
            fields = {**fields, "dest": stdout_file()}
        if "devices" in fields:
            specs.append({"type": fields.get("type", "local"), "dest": fields["dest"], "devices": fields["devices"]})
        else:
            specs.append((fields.get("type", "local"), fields["dest"]))
    return specs


_SECRET_KEYS = {"id", "src", "source", "type"}


def _secrets(items: list[str]) -> dict[str, str]:
    """`id=ID,src=PATH` (src defaults to the id, as docker's does) as id → path."""
    secrets = {}
    for item in items:
        fields = _kv_list(item, "--secret")
        if "env" in fields or fields.get("type") == "env":
            raise UsageError(f"--secret {item!r}: secrets from environment variables are not supported yet",
                             hint="write the value to a file and give --secret id=ID,src=FILE")
        unknown = sorted(set(fields) - _SECRET_KEYS)
        if unknown:
            raise UsageError(f"--secret {item!r}: unknown key {unknown[0]!r}",
                             hint="write --secret id=ID,src=PATH (keys: id, src or source, type=file)")
        if fields.get("type", "file") != "file":
            raise UsageError(f"--secret {item!r}: type={fields['type']} is not supported",
                             hint="only file secrets are: --secret id=ID,src=PATH")
        if "id" not in fields:
            raise UsageError(f"--secret {item!r} needs id=ID")
        secrets[fields["id"]] = fields.get("src") or fields.get("source") or fields["id"]
    return secrets


def _check_report(path: str | None) -> None:
    """Refuse a --report destination that cannot be written before anything is built."""
    if not path:
        return
    if os.path.isdir(path):
        raise UsageError(f"--report {path!r} is a directory", hint="give the name of the JSON file to write")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--report {path!r}: directory {parent!r} does not exist")


def _source_date_epoch() -> int | None:
    text = os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"invalid SOURCE_DATE_EPOCH {text!r}",
                         hint="give the seconds since 1970-01-01 UTC as a whole number") from None


def _inputs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The context and Dockerfile arguments of the library: `-` (either) is standard input, refused
    as docker refuses it for both, or when it is a terminal."""
    if args.context == "-" and args.file == "-":
        from layerbuild.worker.request import BOTH_STDIN, BOTH_STDIN_HINT

        raise UsageError(BOTH_STDIN, hint=BOTH_STDIN_HINT)
    if "-" not in (args.context, args.file):
        return args.context, args.file or None
    if sys.stdin is None:
        raise UsageError("standard input is closed", hint="pipe the Dockerfile or the context's tar archive into it")
    if sys.stdin.isatty():
        raise UsageError("standard input is a terminal", hint="pipe the Dockerfile or the context's tar archive "
                                                              "into it: `layerbuild build - < context.tar`")
    stdin = sys.stdin.buffer
    if args.file == "-":
        return args.context, stdin
    return stdin, args.file or None


def run(args: argparse.Namespace) -> int:
    from layerbuild.api.build import build, parse_labels
    from layerbuild.cli.progress import make_progress, write_report

    _check_report(args.report)
    context, dockerfile = _inputs(args)
    labels = parse_labels(args.label)
    scratch: list[str] = []

    def stdout_file() -> str:  # a private dir: the archive is written there, then streamed
        import tempfile  # only for `-o -`: not on a no-op's start-up path

        scratch.append(tempfile.mkdtemp(prefix="layerbuild-output-"))
        return os.path.join(scratch[0], "archive.tar")

    try:
        outputs = _outputs(args.output, stdout_file)
        progress = make_progress("quiet" if args.quiet or (args.dry_run and args.progress != "json")
                                 else args.progress)
    except BaseException:  # a bad -o after `dest=-`'s: its private dir goes too
        if scratch:
            import shutil

            shutil.rmtree(scratch[0], ignore_errors=True)
        raise
    if args.push and not any(isinstance(o, dict) and o.get("type") == "registry" for o in outputs):
        outputs.append({"type": "registry"})
    try:
        result = build(
            context, dockerfile, args.tag, _build_args(args.build_arg), args.target, args.no_cache, progress,
            args.root, no_cache_filter=args.no_cache_filter, jobs=args.jobs, network=args.network,
            secrets=_secrets(args.secret), outputs=outputs, source_date_epoch=_source_date_epoch(),
            allow=[a.strip() for item in args.allow for a in item.split(",") if a.strip()],
            memory=args.memory, memory_swap=args.memory_swap, cpus=args.cpus, pids_limit=args.pids_limit,
            build_contexts=_build_contexts(args.build_context), ssh=_ssh(args.ssh),
            labels=labels, add_hosts=args.add_host, pull=args.pull, platform=args.platform,
            cache_from=args.cache_from, cache_to=args.cache_to, dry_run=args.dry_run,
        )  # fmt: skip
    finally:
        progress.close()
        streamed = bool(scratch) and _stream_out(scratch[0])
    if args.report:
        try:
            write_report(result, args.report)
        except OSError as exc:
            raise UsageError(f"cannot write the report to {args.report!r}: {exc.strerror or exc}") from None
    if args.dry_run:
        if not args.quiet and args.progress != "json":
            print(dry_run_text(result))
        return 0
    _write_files(args, result)
    if args.quiet and not streamed:  # standard output carries the archive, and nothing else
        print(result.image.id)
    return 0


def dry_run_text(result: Any) -> str:
    """A dry run as lines: each step, HIT or RUNS with its reason (config-only steps as META, FROM as BASE)."""
    lines = []
    for step in result.steps:
        word = step.kind.upper() if step.kind in ("meta", "base") else "HIT" if step.cached else "RUNS"
        why = f"  ({step.reason})" if step.reason and not step.cached else ""
        lines.append(f"{word:<5} [{step.stage} {step.index}] {step.instruction}{why}")
    s = result.summary
    lines.append(f"dry run: {s.cached} of {s.cached + s.executed} steps would hit the cache "
                 f"({s.hit_rate:.0%}), {s.executed} would run; nothing was run or stored")
    return "\n".join(lines)


def _write_files(args: argparse.Namespace, result: Any) -> None:
    """--iidfile (the image id, as docker writes it) and --metadata-file (BuildKit's keys)."""
    import json

    files: list[tuple[str, str]] = []
    if args.iidfile:
        files.append((args.iidfile, result.image.id))
    if args.metadata_file:
        from layerbuild.image import resolve_image

        with open_store(args) as store:
            manifest = resolve_image(store, result.image.id).manifest_digest
        meta = {"containerimage.config.digest": result.image.id, "containerimage.digest": manifest}
        if result.image.tags:
            meta["image.name"] = ",".join(result.image.tags)
        files.append((args.metadata_file, json.dumps(meta, indent=2) + "\n"))
    for path, text in files:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _stream_out(directory: str) -> bool:
    """Copy the archive written for `dest=-` to standard output and remove its dir; False if the build
    wrote none (it failed)."""
    import shutil

    try:
        try:
            f = open(os.path.join(directory, "archive.tar"), "rb")  # noqa: SIM115
        except FileNotFoundError:
            return False
        with f:
            sys.stdout.flush()
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return True
    finally:
        shutil.rmtree(directory, ignore_errors=True)
