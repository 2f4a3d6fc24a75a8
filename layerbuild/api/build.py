"""`layerbuild.build()`: the library's build entry point; the CLI's `build` verb is a skin over it.

A no-op rebuild is answered by the fast path (`worker.fastpath`) before the build machinery, SQLite,
zstd or the grammar are imported: this module imports only light modules at the top.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from layerbuild.api.contexts import named_contexts, ssh_sources
from layerbuild.errors import UsageError
from layerbuild.store.layout import resolve_root
from layerbuild.worker import fastpath
from layerbuild.worker.cachespec import parse_cache_spec
from layerbuild.worker.request import BOTH_STDIN, BOTH_STDIN_HINT, BuildRequest, OutputSpec

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from typing import BinaryIO

    from layerbuild.solve.report import BuildEvent, BuildResult

OUTPUT_TYPES = ("local", "tar", "oci", "docker", "registry", "image")
_PUSH_KEYS = {"type", "name", "push", "oci-mediatypes", "compression"}
# BuildKit's entitlements. network.host is accepted for docker's spelling; host networking needs none here.
ENTITLEMENTS = ("security.insecure", "network.host")
NETWORK_MODES = ("default", "none", "host")
# An output: (type, dest), or {"type": ..., "dest": ...} as `--output type=...,dest=...` spells it.
Output = tuple[str, str | os.PathLike[str]] | Mapping[str, str]



def build(
    context: str | os.PathLike[str] | BinaryIO,
    dockerfile: str | os.PathLike[str] | bytes | BinaryIO | None = None,
    tags: Iterable[str] = (),
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    no_cache: bool = False,
    on_event: Callable[[BuildEvent], None] | None = None,
    root: str | os.PathLike[str] | None = None,
    *,
    no_cache_filter: Iterable[str] = (),
    jobs: int = 0,
    network: str = "default",
    secrets: Mapping[str, str | os.PathLike[str]] | None = None,
    outputs: Iterable[Output] = (),
    source_date_epoch: int | None = None,
    allow: Iterable[str] = (),
    memory: str | int | None = None,
    memory_swap: str | int | None = None,
    cpus: str | float | None = None,
    pids_limit: str | int | None = None,
    build_contexts: Mapping[str, str | os.PathLike[str]] | None = None,
    ssh: Mapping[str, str | os.PathLike[str] | Iterable[str | os.PathLike[str]]] | None = None,
    labels: Mapping[str, str] | None = None,
    add_hosts: Iterable[str] = (),
    pull: bool = False,
    platform: str | None = None,
    cache_from: Iterable[str] = (),
    cache_to: Iterable[str] = (),
    dry_run: bool = False,
) -> BuildResult:
    """Build the Dockerfile in `context` (or `dockerfile`) into the store at `root`.

    `context` is a directory, or a binary stream (`build -`: `sys.stdin.buffer`) that holds a tar
    archive of the context (plain, gzip, bzip2, xz or zstd, told by its content; no .dockerignore
    applies to it, as in BuildKit) or else a Dockerfile, built with no context. `dockerfile` is a
    path (`-f`; for an archive context, the name inside the archive), or the Dockerfile's text as
    bytes or a binary stream (`-f -`).

    `tags` name the image; `no_cache_filter` names stages rebuilt without the cache; `jobs` bounds
    the stages built at once (0: one per CPU); `network` is `default`, `none` or `host` for RUN steps;
    `secrets` maps a secret id to the file `RUN --mount=type=secret,id=ID` reads (never stored);
    `outputs` are `(type, dest)` pairs or `{"type", "dest"}` mappings, of type `local`, `tar`, `oci`
    or `docker`, or `{"type": "registry"}` (also `{"type": "image", "push": "true"}`, with optional
    `name`, `oci-mediatypes` and `compression`, as buildx spells them): the image pushed to the
    `tags` (or `name`), its lines reported as `build.pushed` events; `source_date_epoch` clamps the image's timestamps. `memory` (bytes, or docker's
    `64m`), `memory_swap` (memory plus swap, -1 unlimited), `cpus` and `pids_limit` (default 2048,
    -1 unlimited) limit every RUN step's cgroup; they are not part of any cache key, as in BuildKit.
    `on_event` receives every progress event, one at a time (RUN output and parallel stages may call
    it from the build's threads). `allow` grants entitlements (`security.insecure` lets
    `RUN --security=insecure` run with every capability and no seccomp). `build_contexts` maps a
    name to a directory or `docker-image://REF[@DIGEST]` (`--build-context`): `FROM NAME`,
    `COPY --from=NAME` and `RUN --mount=from=NAME` read it instead of a stage or image of that name.
    `ssh` maps an id to an agent socket or private key files (`[]`: `$SSH_AUTH_SOCK`) that
    `RUN --mount=type=ssh,id=ID` reaches through a socket of its own; never part of a key.
    `labels` are set on the image after the Dockerfile's own LABELs (`--label`; no history entry, no
    step re-runs); `add_hosts` are docker's `--add-host` entries (`NAME:IP`, `NAME=IP`, `NAME:[IPv6]`, `NAME:host-gateway`) for
    every RUN step's /etc/hosts, part of the RUN steps' cache keys as in BuildKit. Base images and
    image sources the store lacks are pulled from their registries; `pull` asks the registry for
    every one named by a tag and pulls what changed. `platform` (`OS/ARCH[/VARIANT]`) is the platform
    built for (default: this machine's); stages with RUN steps must be for a platform this machine
    runs. `cache_from` and `cache_to` are `--cache-from`/`--cache-to` values in BuildKit's syntax
    (`type=registry,ref=REF[,mode=min|max][,compression=gzip|zstd]`, `type=local,src|dest=DIR`, or a
    bare REF): a step the store lacks is looked up in each `cache_from` in turn (its records read
    at the first such miss), and after the build its records are merged into each `cache_to`.
    `dry_run` looks every step up without running any and stores nothing (no image, no history, no
    export, no cache export): each step says whether it would hit and, if not, why; a step on top of
    one that would run says "runs: upstream step STAGE:N `TEXT` runs". The result has `dry_run` set
    and no image id. Returns the report
    as typed values. Raises a LayerbuildError: UsageError for bad
    arguments (before anything is built), DockerfileError for a bad Dockerfile, BuildError when a
    step fails.
    """
    streamed = _is_stream(context) or _is_stream(dockerfile) or isinstance(dockerfile, bytes)
    if _is_stream(context) and _is_stream(dockerfile):
        raise UsageError(BOTH_STDIN, hint=BOTH_STDIN_HINT)
    request = _request(
        Path() if _is_stream(context) else context,  # type: ignore[arg-type]
        None if streamed else dockerfile,  # type: ignore[arg-type]
        tags, build_args, target, no_cache, no_cache_filter=no_cache_filter, jobs=jobs,
        network=network, secrets=secrets, outputs=outputs, source_date_epoch=source_date_epoch,
    )  # fmt: skip
    request = dataclasses.replace(request, allow=_entitlements(allow), contexts=named_contexts(build_contexts),
                                  ssh=ssh_sources(ssh), labels=_labels(labels or {}),
                                  extra_hosts=_extra_hosts(add_hosts), pull=bool(pull),
                                  platform=_platform(platform),
                                  cache_from=tuple(parse_cache_spec(v, export=False) for v in cache_from),
                                  cache_to=tuple(parse_cache_spec(v, export=True) for v in cache_to),
                                  dry_run=bool(dry_run))
    if memory is not None or memory_swap is not None or cpus is not None or pids_limit is not None:
        request = _with_limits(request, memory, memory_swap, cpus, pids_limit)
    started = time.monotonic()
    store_root = resolve_root(root)
    fp = None
    if not streamed:
        result, fp = fastpath.answer(request, store_root, started, on_event)
        if result is not None:
            return result
    from layerbuild.store import Store

    with Store.open(store_root) as store:
        if not streamed:
            from layerbuild.worker import build as full

            return full.run_build(dataclasses.replace(request, fingerprint=fp), store, on_event=on_event)
        from layerbuild.worker.streamctx import materialize

        source = context if _is_stream(context) else request.context
        with materialize(store, context=source, dockerfile=dockerfile,  # type: ignore[arg-type]
                         tags=request.tags) as made:
            request = dataclasses.replace(request, context=made.context, dockerfile=made.dockerfile,
                                          stream=made.origin)
            # `-f - DIR`: the context is a real directory, so the last build may answer (none else).
            result, fp = fastpath.answer(request, store_root, started, on_event)
            if result is not None:
                return result
            from layerbuild.worker import build as full  # not needed by an answered no-op

            return full.run_build(dataclasses.replace(request, fingerprint=fp), store, on_event=on_event)


def _is_stream(value: object) -> bool:
    """A binary stream argument (an object with `read`) rather than a path or bytes."""
    return hasattr(value, "read") and not isinstance(value, str | bytes | os.PathLike)


def _request(
    context: str | os.PathLike[str],
    dockerfile: str | os.PathLike[str] | None,
    tags: Iterable[str],
    build_args: Mapping[str, str] | None,
    target: str | None,
    no_cache: bool,
    *,
    no_cache_filter: Iterable[str],
    jobs: int,
    network: str,
    secrets: Mapping[str, str | os.PathLike[str]] | None,
    outputs: Iterable[Output],
    source_date_epoch: int | None,
) -> BuildRequest:
    """The arguments checked and turned into a BuildRequest; UsageError (with a hint) if one is wrong."""
    if network not in NETWORK_MODES:
        raise UsageError(f"unknown --network {network!r}", hint="use default, none or host")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise UsageError(f"invalid --jobs {jobs!r}", hint="give a number of stages, or 0 for one per CPU")
    if source_date_epoch is not None and (isinstance(source_date_epoch, bool) or not isinstance(source_date_epoch, int)
                                          or source_date_epoch < 0):
        raise UsageError(f"invalid SOURCE_DATE_EPOCH {source_date_epoch!r}",
                         hint="give the seconds since 1970-01-01 UTC as a whole number")
    specs = _outputs(outputs)
    if any(s.push and not s.names for s in specs) and not _names(tags):
        raise UsageError("pushing a build needs a name to push to", hint="give -t NAME[:TAG] (or name=REF in --output)")
    return BuildRequest(
        context=Path(context),
        dockerfile=Path(dockerfile) if dockerfile is not None else None,
        tags=_names(tags),
        build_args=dict(build_args or {}),
        target=target,
        no_cache=no_cache,
        no_cache_filter=frozenset(s.strip() for f in _names(no_cache_filter) for s in f.split(",") if s.strip()),
        jobs=jobs,
        network=network,
        secrets=_secrets(secrets or {}),
        outputs=specs,
        source_date_epoch=source_date_epoch,
    )


def _platform(text: str | None) -> str | None:
    """`--platform` checked and normalised (`linux/aarch64` → `linux/arm64`); UsageError if it is no platform."""
    if text is None:
        return None
    from layerbuild.platforms import format_platform, parse_platform

    if "," in text:
        raise UsageError(f"--platform {text!r} names several platforms",
                         hint="one platform per build for now (multi-platform images come later)")
    try:
        return format_platform(parse_platform(text))
    except ValueError as exc:
        raise UsageError(str(exc), hint="e.g. --platform linux/amd64 or linux/arm/v7") from None


def _with_limits(request: BuildRequest, memory: str | int | None, memory_swap: str | int | None,
                 cpus: str | float | None, pids_limit: str | int | None) -> BuildRequest:
    """The RUN steps' resource limits checked as `run` checks them; UsageError if one is wrong."""
    from layerbuild.runtime.limits import parse_limits  # only for builds that set limits: not light

    def text(value: str | int | None) -> str | None:
        return None if value is None else str(value)

    limits = parse_limits(text(memory), text(memory_swap), cpus, pids_limit)
    return dataclasses.replace(request, memory=limits.memory, memory_swap=limits.memory_swap,
                               cpus=limits.cpus, pids_limit=limits.pids)


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """docker's `--label KEY=VALUE` (`KEY` alone: an empty value), checked as the docker CLI checks
    them; a key given twice keeps its last value."""
    out = {}
    for item in _names(items):
        key, _, value = item.partition("=")
        name = key.lstrip(_BLANKS)
        if not name:
            raise UsageError(f"invalid label '{item}': empty name", hint="write --label KEY=VALUE")
        out[key] = value
    return _labels(out)


_BLANKS = " \t\n\v\f\r"


def _labels(items: Mapping[str, str]) -> dict[str, str]:
    """`--label` keys and values checked as the docker CLI checks them (a name, without white space)."""
    if not isinstance(items, Mapping):
        raise UsageError(f"invalid labels {items!r}", hint="give labels as a mapping of key to value")
    out = {}
    for key, value in items.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UsageError(f"invalid label {key!r}={value!r}", hint="label keys and values are strings")
        name = key.lstrip(_BLANKS)
        if not name:
            raise UsageError(f"invalid label '{key}={value}': empty name", hint="write --label KEY=VALUE")
        if any(c.isspace() for c in name):
            raise UsageError(f"label '{name}' contains whitespaces", hint="write --label KEY=VALUE")
        out[key] = value
    return out


def _extra_hosts(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`--add-host` entries as BuildKit keys them: checked in docker's words, the name lower-cased,
    the address in Go's canonical form, `host-gateway` replaced by the host's address."""
    entries = _names(items)
    if not entries:
        return ()
    from layerbuild.runtime.network import HOST_GATEWAY, canonical_ip, host_gateway_address, parse_add_host

    parsed = [parse_add_host(item) for item in entries]
    gateway = host_gateway_address() if any(ip == HOST_GATEWAY for _, ip in parsed) else ""
    return tuple((name.lower(), gateway if ip == HOST_GATEWAY else canonical_ip(ip)) for name, ip in parsed)


def _names(items: Iterable[str]) -> tuple[str, ...]:
    """A tuple of names; one name given as a plain string is one name, not its characters."""
    return (items,) if isinstance(items, str) else tuple(items)


def _outputs(items: Iterable[Output]) -> tuple[OutputSpec, ...]:
    specs = []
    for item in items:
        kind, dest = (item.get("type", "local"), item.get("dest", "")) if isinstance(item, Mapping) else item
        if kind not in OUTPUT_TYPES:
            raise UsageError(f"unknown --output type={kind}", hint="use type=local, tar, oci, docker or registry")
        if kind in ("registry", "image"):
            specs.append(_push_output(kind, item if isinstance(item, Mapping) else {"type": kind}))
            continue
        if not str(dest):
            raise UsageError(f"--output type={kind} needs dest=PATH")
        devices = _devices(item.get("devices", False) if isinstance(item, Mapping) else False, kind)
        specs.append(OutputSpec(kind, str(dest), devices))
    return tuple(specs)


def _push_output(kind: str, item: Mapping[str, str]) -> OutputSpec:
    """`type=registry|image[,name=REF[,REF]][,push=true|false][,oci-mediatypes=true][,compression=gzip|zstd]`,
    as buildx spells it: registry means image with push=true."""
    unknown = sorted(set(item) - _PUSH_KEYS)
    if unknown:
        raise UsageError(f"--output type={kind}: unknown key {unknown[0]!r}",
                         hint="keys: name, push, oci-mediatypes, compression")
    push = _flag(item.get("push", "true" if kind == "registry" else "false"), "push")
    oci = _flag(item.get("oci-mediatypes", "false"), "oci-mediatypes")
    compression = str(item.get("compression", "gzip"))
    if compression not in ("gzip", "zstd"):
        raise UsageError(f"--output compression={compression!r} is not supported", hint="use gzip or zstd")
    names = tuple(n.strip() for n in str(item.get("name", "")).split(",") if n.strip())
    return OutputSpec(kind, "", names=names, push=push, oci=oci or compression == "zstd", compression=compression)


def _flag(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise UsageError(f"invalid --output {key}={value!r}", hint=f"write {key}=true or {key}=false")


def _entitlements(items: Iterable[str]) -> frozenset[str]:
    names = frozenset(_names(items))
    for name in sorted(names - set(ENTITLEMENTS)):
        raise UsageError(f"unknown entitlement {name!r} for --allow", hint=f"use {' or '.join(ENTITLEMENTS)}")
    return names


def _devices(value: object, kind: str) -> bool:
    """`devices=true|false` of an output: whether a local export writes the image's device nodes."""
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        value = value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise UsageError(f"invalid --output devices={value!r}", hint="write devices=true or devices=false")
    if value and kind != "local":
        raise UsageError(f"--output type={kind} does not take devices=", hint="devices=true is for type=local")
    return value


def _secrets(items: Mapping[str, str | os.PathLike[str]]) -> dict[str, Path]:
    secrets = {}
    for secret_id, src in items.items():
        if not secret_id:
            raise UsageError("a secret needs an id", hint="write --secret id=ID,src=PATH")
        path = Path(src)
        if not path.is_file() or not os.access(path, os.R_OK):
            raise UsageError(f"--secret id={secret_id}: cannot read {str(path)!r}",
                             hint="src= must name a readable file (the secret's value)")
        secrets[secret_id] = path
    return secrets
