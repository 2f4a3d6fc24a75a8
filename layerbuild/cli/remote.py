"""Commands run on a build host: `-H/--host ssh://USER@HOST[:PORT]`, `--machine NAME` or $LAYERBUILD_HOST
route a verb to the host's `layerbuild serve --stdio` (layerbuild.remote) instead of this machine."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from layerbuild.errors import UsageError

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path
if TYPE_CHECKING:
    from typing import Any

# Verbs that act on the host's store when a host is selected; the rest are refused there.
REMOTE_VERBS = {"build", "images", "inspect", "history", "tag", "rmi", "run", "ps", "logs", "stop", "rm",
                "push", "pull", "df", "prune", "fsck"}
LOCAL_VERBS = {"machine", "serve", "parse"}  # never routed: they are about this machine (or pure)
GLOBAL_VALUE_OPTIONS = ("-H", "--host", "--machine")


def take_host_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """`-H URL`, `--host URL`, `--machine NAME` given before the verb, and the argv without them."""
    found: dict[str, str] = {}
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in GLOBAL_VALUE_OPTIONS:
            value = next(args, None)
            if value is None:
                raise UsageError(f"{arg} needs a value")
            found["machine" if arg == "--machine" else "host"] = value
            continue
        name, sep, value = arg.partition("=")
        if sep and name in ("--host", "--machine"):
            found[name[2:]] = value
            continue
        if arg == "--root":
            rest.append(arg)
            nxt = next(args, None)
            if nxt is not None:
                rest.append(nxt)
            continue
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            rest.extend(args)
            break
        rest.append(arg)
    return found, rest


def selected(options: dict[str, str], verb: str) -> tuple[Any, str | None] | None:
    """The target the verb runs on (and the machine's name), or None for this machine."""
    from layerbuild.remote import machines
    from layerbuild.remote.ssh import parse_target

    name = options.get("machine")
    url = options.get("host")
    if name is None and url is None:
        url = os.environ.get("LAYERBUILD_HOST") or None
        if url is None and os.environ.get("LAYERBUILD_MACHINE"):
            name = os.environ["LAYERBUILD_MACHINE"]
    if name is None and url is None:
        return None
    if verb in LOCAL_VERBS:
        return None
    if name is not None and url is not None:
        raise UsageError("give --host or --machine, not both")
    if name is not None:
        machine = machines.get(name)
        return machine.target(), machine.name
    assert url is not None
    if url in ("", "local", "unix://"):
        return None
    machine_at = machines.for_url(url)
    if machine_at is not None:
        return machine_at.target(), machine_at.name
    return parse_target(url), None


def verb_args(argv: Sequence[str], verb: str) -> list[str]:
    """The arguments after the verb (global options before it left out)."""
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--root":
            i += 2
            continue
        if args[i] == verb:
            return args[i + 1:]
        i += 1
    return []


def run(args: argparse.Namespace, argv: Sequence[str], target: Any, machine: str | None,
        parser: argparse.ArgumentParser) -> int:
    """Run the verb of `args` on the target."""
    from layerbuild.remote.client import Connection

    verb = args.verb
    where = f"machine {machine}" if machine else target.url
    if verb not in REMOTE_VERBS:
        raise UsageError(f"`layerbuild {verb}` does not run on a build host ({where} is selected)",
                         hint=f"run it on the host (`layerbuild machine ssh NAME layerbuild {verb} ...`), or "
                              "here without a host (unset LAYERBUILD_HOST / eval $(layerbuild machine env --unset))")
    rest = verb_args(argv, verb)
    if verb == "run" and (getattr(args, "tty", False) or getattr(args, "interactive", False)):
        raise UsageError("`run -i`/`run -t` does not work with a build host yet",
                         hint=f"log into the host (`layerbuild machine ssh {machine or 'NAME'}`) and run it there")
    with Connection(target, machine) as conn:
        if verb == "build":
            return _build(conn, args, rest, parser, where)
        return conn.run([verb, *rest], env=_term_env(), tty=sys.stdout.isatty() and sys.stderr.isatty())


def _term_env() -> dict[str, str]:
    import shutil  # deferred: not on a local build's start-up path

    if not sys.stderr.isatty():
        return {}
    size = shutil.get_terminal_size()
    return {"COLUMNS": str(size.columns), "LINES": str(size.lines), "TERM": os.environ.get("TERM", "xterm")}


def _option_takes_value(parser: argparse.ArgumentParser) -> dict[str, bool]:
    return {opt: action.nargs != 0 for action in parser._actions for opt in action.option_strings}


_REFUSED = {
    "--secret": "secrets are files on this machine; put them on the host and build there "
                "(`layerbuild machine ssh NAME`)",
    "--ssh": "the ssh agent is on this machine; build there without --host, or on the host itself",
    "--output": "exports write to this machine's disk; use --load (the image into the local store) and "
                "`layerbuild save`, or --push",
    "-o": "exports write to this machine's disk; use --load (the image into the local store) and "
          "`layerbuild save`, or --push",
    "--build-context": "named contexts are directories here; only the main context is sent to the host",
    "--metadata-file": "use --report FILE or --iidfile FILE, which work with a host",
}


def _split(rest: list[str], takes: dict[str, bool]) -> list[tuple[str, str | None, bool]]:
    """Tokens as (option or positional, value, written as --opt=value)."""
    out: list[tuple[str, str | None, bool]] = []
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--") and "=" in tok:
            name, _, value = tok.partition("=")
            out.append((name, value, True))
        elif takes.get(tok):
            out.append((tok, rest[i + 1] if i + 1 < len(rest) else None, False))
            i += 1
        elif tok.startswith("-") and len(tok) > 2 and not tok.startswith("--") and tok[:2] in takes and takes[tok[:2]]:
            out.append((tok[:2], tok[2:], True))
        else:
            out.append((tok, None, False))
        i += 1
    return out


def _build(conn: Any, args: argparse.Namespace, rest: list[str], parser: argparse.ArgumentParser,
           where: str) -> int:
    import json

    from layerbuild.remote.sync import scan

    build_parser = parser._subparsers._group_actions[0].choices["build"]  # type: ignore[union-attr,index]
    takes = _option_takes_value(build_parser)
    if args.context == "-" or args.file == "-":
        raise UsageError("a build context or Dockerfile on standard input cannot be sent to a build host yet",
                         hint="give a directory as the context")
    for name, value, _ in _split(rest, takes):
        if name in _REFUSED and not (name in ("--output", "-o") and value and "type=registry" in value):
            raise UsageError(f"`build {name}` does not work with a build host ({where}) yet", hint=_REFUSED[name])
        if name in ("--cache-from", "--cache-to") and value and "type=local" in value:
            raise UsageError(f"`build {name} {value}` names a directory on this machine, not on {where}",
                             hint="use a registry cache (type=registry,ref=REF) with a host")
    dockerfile = args.file or os.path.join(args.context, "Dockerfile")
    remote_args: list[str] = []
    have_df = os.path.isfile(dockerfile)
    if args.file and not have_df:
        raise UsageError(f"no such Dockerfile {args.file!r}")
    the_scan = scan(args.context, dockerfile if have_df else None)
    remote_df = None
    if have_df:
        with open(dockerfile, "rb") as f:
            remote_df = conn.put("Dockerfile", f.read(), the_scan.context_id)
        ignore = dockerfile + ".dockerignore"
        if os.path.isfile(ignore):
            with open(ignore, "rb") as f:
                conn.put("Dockerfile.dockerignore", f.read(), the_scan.context_id)
        else:  # one sent by an earlier build must not apply any more
            conn.put("Dockerfile.dockerignore", None, the_scan.context_id)
    quiet = args.quiet or args.progress in ("quiet", "json")
    synced = conn.sync(the_scan)
    if remote_df is not None:
        remote_df = os.path.dirname(synced.dir) + remote_df[2:]
    total = len([i for i in the_scan.items if i[1] == "f"])
    if not quiet:
        print(f"#0 sending context to {where}: {synced.files} of {total} files, {_size(synced.bytes)} of "
              f"{_size(the_scan.total_bytes)}", file=sys.stderr, flush=True)
    # The host's copy of the context replaces CONTEXT; these options are ours to handle.
    handled = {"-f", "--file", "--report", "--iidfile", "--load"}
    positional_done = False
    for name, value, inline in _split(rest, takes):
        if name in handled:
            continue
        if name == args.context and value is None and not positional_done and not name.startswith("-"):
            remote_args.append(synced.dir)
            positional_done = True
            continue
        if value is None:
            remote_args.append(name)
        elif inline:
            remote_args.append(f"{name}={value}")
        else:
            remote_args += [name, value]
    if remote_df is not None:
        remote_args += ["-f", remote_df]
    report_path = f"{conn.tmp}/report.json"
    remote_args += ["--report", report_path]
    code = int(conn.run(["build", *remote_args], env=_term_env(),
                        tty=args.progress in ("auto", "tty") and sys.stderr.isatty()))
    if code != 0:
        return code
    import io

    buf = io.BytesIO()
    if not conn.fetch(report_path, buf):
        return code
    report = json.loads(buf.getvalue())
    report["remote"] = {"host": where, "context_files": total, "context_bytes": the_scan.total_bytes,
                        "sent_files": synced.files, "sent_bytes": synced.bytes}
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    image_id = report["image"]["id"]
    if args.iidfile:
        with open(args.iidfile, "w", encoding="utf-8") as f:
            f.write(image_id)
    if args.load:
        _load(conn, args, image_id, list(report["image"].get("tags") or []), quiet)
    return 0


def _load(conn: Any, args: argparse.Namespace, image_id: str, tags: list[str], quiet: bool) -> None:
    """Bring the built image into the local store: `save` on the host, the archive fetched, loaded here."""
    import io
    import tempfile

    from layerbuild.errors import BuildError

    archive = f"{conn.tmp}/image.tar"
    err = io.BytesIO()
    code = conn.run(["save", tags[0] if tags else image_id, "-o", archive], stdout=err, stderr=err)
    if code != 0:
        raise BuildError(f"--load: saving the image on the host failed: {err.getvalue().decode(errors='replace')}")
    from layerbuild.cli.common import open_store
    from layerbuild.image.load import load_archive

    fd, local = tempfile.mkstemp(prefix="layerbuild-load-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as f:
            conn.fetch(archive, f)
        with open_store(args) as store:
            load_archive(store, local)
            if tags:
                from layerbuild.image import tag_image

                for extra in tags[1:]:
                    tag_image(store, tags[0], extra)
    finally:
        os.unlink(local)
    if not quiet:
        names = ", ".join(tags) if tags else image_id
        print(f"Loaded image: {names}", file=sys.stderr)


def _size(n: int) -> str:
    from layerbuild.cli.common import human_size

    return human_size(n)
