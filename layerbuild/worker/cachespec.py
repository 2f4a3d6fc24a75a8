"""`--cache-from`/`--cache-to` values (BuildKit's syntax), parsed before anything heavy is imported."""

from __future__ import annotations

import re
from dataclasses import dataclass

from layerbuild.errors import UsageError
from layerbuild.reference import parse_reference


@dataclass(frozen=True)
class CacheSpec:
    """One `--cache-to`/`--cache-from` value: `type=registry,ref=…`, `type=local,dest=…|src=…`, or
    (`--cache-to`) `type=inline`: the records travel in the built image's config."""

    type: str
    ref: str = ""
    path: str = ""
    mode: str = "min"
    compression: str = "gzip"
    max_size: int | None = None  # bytes of layer blobs the records may name; the least recently used go
    cache_mounts: bool = False  # export RUN --mount=type=cache contents too
    ignore_error: bool = False  # an export that fails is a warning, not a failed build (BuildKit's option)

    def describe(self) -> str:
        return self.ref if self.type == "registry" else self.path if self.type == "local" else "inline"


def parse_cache_spec(value: str, *, export: bool) -> CacheSpec:
    """`--cache-to`/`--cache-from` in BuildKit's syntax; a bare `REF` is `type=registry,ref=REF`."""
    flag = "--cache-to" if export else "--cache-from"
    if "=" not in value.split(",", 1)[0]:
        value = f"type=registry,ref={value}"
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, eq, val = part.partition("=")
        if not eq:
            raise UsageError(f"{flag} {value!r}: {part!r} is not KEY=VALUE")
        fields[key.strip()] = val.strip()
    kind = fields.pop("type", "registry")
    if kind not in ("registry", "local", "inline"):
        raise UsageError(f"{flag}: cache type {kind!r} is not supported",
                         hint="use type=registry, type=local or (--cache-to) type=inline")
    if kind == "inline" and not export:
        raise UsageError("--cache-from: type=inline is not a source",
                         hint="name the image that carries the cache: --cache-from REGISTRY/IMAGE:TAG")
    mode = fields.pop("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"{flag}: mode={mode} is neither min nor max")
    if kind == "inline" and mode != "min":
        raise UsageError("--cache-to type=inline: only mode=min (the image carries its own steps' records)",
                         hint="for every stage's records, use type=registry,mode=max")
    compression = fields.pop("compression", "gzip")
    if compression not in ("gzip", "zstd"):
        raise UsageError(f"{flag}: compression={compression} is not supported", hint="use gzip or zstd")
    max_size = _size(flag, fields.pop("max-size")) if "max-size" in fields else None
    mounts_text = _flag(flag, "cache-mounts", fields.pop("cache-mounts", "false"))
    ignore_text = _flag(flag, "ignore-error", fields.pop("ignore-error", "false"))
    ref = fields.pop("ref", "")
    path = fields.pop("dest" if export else "src", "")
    for ignored in ("oci-mediatypes", "image-manifest", "compression-level", "force-compression"):
        fields.pop(ignored, None)  # BuildKit's options that change nothing here
    if fields:
        raise UsageError(f"{flag}: unknown option(s) {', '.join(sorted(fields))}")
    if kind == "registry":
        if not ref:
            raise UsageError(f"{flag}: type=registry needs ref=NAME[:TAG]")
        parsed = parse_reference(ref)
        if parsed.digest is not None and export:
            raise UsageError(f"{flag}: cannot export a cache to a digest reference: {ref}")
    elif kind == "local" and not path:
        raise UsageError(f"{flag}: type=local needs {'dest' if export else 'src'}=DIR")
    return CacheSpec(kind, ref=ref, path=path, mode=mode, compression=compression, max_size=max_size,
                     cache_mounts=mounts_text in ("true", "1"), ignore_error=ignore_text in ("true", "1"))


def _flag(flag: str, name: str, text: str) -> str:
    if text.lower() not in ("true", "false", "1", "0"):
        raise UsageError(f"{flag}: {name}={text} is neither true nor false")
    return text.lower()


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$", re.IGNORECASE)


def _size(flag: str, text: str) -> int:
    """`500MB`, `10g`, `2GiB`, `1048576`: bytes, in powers of 1024 as docker's sizes are."""
    match = _SIZE_RE.match(text.strip())
    if match is None:
        raise UsageError(f"{flag}: max-size={text} is not a size", hint="write e.g. max-size=5GB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
