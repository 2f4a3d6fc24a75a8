"""`--cache-from`/`--cache-to` values (BuildKit's syntax), parsed before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass

from layerbuild.errors import UsageError
from layerbuild.reference import parse_reference


@dataclass(frozen=True)
class CacheSpec:
    """One `--cache-to`/`--cache-from` value: `type=registry,ref=…` or `type=local,dest=…|src=…`."""

    type: str
    ref: str = ""
    path: str = ""
    mode: str = "min"
    compression: str = "gzip"

    def describe(self) -> str:
        return self.ref if self.type == "registry" else self.path


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
    if kind not in ("registry", "local"):
        raise UsageError(f"{flag}: cache type {kind!r} is not supported", hint="use type=registry or type=local")
    mode = fields.pop("mode", "min")
    if mode not in ("min", "max"):
        raise UsageError(f"{flag}: mode={mode} is neither min nor max")
    compression = fields.pop("compression", "gzip")
    if compression not in ("gzip", "zstd"):
        raise UsageError(f"{flag}: compression={compression} is not supported", hint="use gzip or zstd")
    ref = fields.pop("ref", "")
    path = fields.pop("dest" if export else "src", "")
    for ignored in ("ignore-error", "oci-mediatypes", "image-manifest", "compression-level", "force-compression"):
        fields.pop(ignored, None)  # BuildKit's options that change nothing here
    if fields:
        raise UsageError(f"{flag}: unknown option(s) {', '.join(sorted(fields))}")
    if kind == "registry":
        if not ref:
            raise UsageError(f"{flag}: type=registry needs ref=NAME[:TAG]")
        parsed = parse_reference(ref)
        if parsed.digest is not None and export:
            raise UsageError(f"{flag}: cannot export a cache to a digest reference: {ref}")
    elif not path:
        raise UsageError(f"{flag}: type=local needs {'dest' if export else 'src'}=DIR")
    return CacheSpec(kind, ref=ref, path=path, mode=mode, compression=compression)
