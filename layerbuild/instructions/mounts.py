"""`RUN --mount=...` specs parsed into typed mounts (bind, cache, tmpfs, secret, ssh) as BuildKit reads them."""

from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Expander = Callable[[str], str]
Sharing = Literal["shared", "private", "locked"]

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
_KEYS = (
    "type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro", "readwrite", "rw",
    "required", "sharing", "mode", "uid", "gid", "id", "size",
)  # fmt: skip


class MountError(ValueError):
    """A `--mount` value BuildKit would reject; `hint` may suggest a fix."""

    def __init__(self, message: str, *, hint: str | None = None, near: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.near = near


@dataclass(frozen=True, kw_only=True)
class BindMount:
    """Files of the build context or of another stage (`from`), read-only unless `rw`."""

    spec: str
    target: str
    source: str = ""
    from_stage: str | None = None
    readonly: bool = True
    type: Literal["bind"] = "bind"


@dataclass(frozen=True, kw_only=True)
class CacheMount:
    """A persistent cache directory shared between builds, keyed by `id` (the target by default)."""

    spec: str
    target: str
    id: str
    sharing: Sharing = "shared"
    source: str = ""
    from_stage: str | None = None
    readonly: bool = False
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    type: Literal["cache"] = "cache"


@dataclass(frozen=True, kw_only=True)
class TmpfsMount:
    """An empty tmpfs at `target`; `size` in bytes, None for the default."""

    spec: str
    target: str
    size: int | None = None
    type: Literal["tmpfs"] = "tmpfs"


@dataclass(frozen=True, kw_only=True)
class SecretMount:
    """A build secret as a file (by default `/run/secrets/<id>`); never part of a cache key."""

    spec: str
    id: str
    target: str
    required: bool = False
    mode: int = 0o400
    uid: int = 0
    gid: int = 0
    type: Literal["secret"] = "secret"


@dataclass(frozen=True, kw_only=True)
class SshMount:
    """An SSH agent socket forwarded from the client (`id` "default" unless given)."""

    spec: str
    id: str = "default"
    target: str = ""
    required: bool = False
    mode: int = 0o600
    uid: int = 0
    gid: int = 0
    type: Literal["ssh"] = "ssh"


Mount = BindMount | CacheMount | TmpfsMount | SecretMount | SshMount

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)$", re.IGNORECASE)


def parse_mount(spec: str, expand: Expander | None = None) -> Mount:
    """Parse one `--mount` value. Without `expand`, values holding `$` are left to expansion time."""
    try:
        fields = next(csv.reader([spec], strict=True), [])
    except csv.Error as exc:
        raise MountError(f"failed to parse mount {spec!r}: {exc}") from None
    opts: dict[str, str] = {}
    deferred = False
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("readonly", "ro"):
                opts["readonly"] = "true"
                continue
            if key in ("readwrite", "rw"):
                opts["readonly"] = "false"
                continue
            if key == "required":
                opts["required"] = "true"
                continue
        if key not in _KEYS:
            import difflib  # only for a hint: not on every parse's path

            close = difflib.get_close_matches(key, _KEYS, n=1)
            raise MountError(
                f"unexpected key '{key}' in '{item}'",
                hint=(f"did you mean {close[0]}? " if close else "") + "keys: " + ", ".join(_KEYS[:-1]),
                near=item,
            )
        if expand is not None:
            value = expand(value)
        elif "$" in value:
            if key == "from" and value.index("$") != len(value) - 1:
                raise MountError(
                    "'from' doesn't support variable expansion, define alias stage instead",
                    hint="add `FROM <image> AS <name>` and use from=<name>",
                )
            deferred = True
        opts[_canonical(key)] = value
    if deferred:
        # Some option is only known after expansion: keep the keys checked, validate values later.
        opts = {k: v for k, v in opts.items() if "$" not in v}
    return _build(spec, opts, strict=not deferred)


def _canonical(key: str) -> str:
    return {
        "src": "source",
        "dst": "target",
        "destination": "target",
        "ro": "readonly",
        "rw": "readwrite",
    }.get(key, key)


def _build(spec: str, opts: dict[str, str], *, strict: bool) -> Mount:
    kind = opts.pop("type", "bind").lower()
    if kind not in MOUNT_TYPES:
        import difflib  # only for a hint: not on every parse's path

        close = difflib.get_close_matches(kind, MOUNT_TYPES, n=1)
        raise MountError(
            f"unsupported mount type {kind!r}",
            hint=(f"did you mean {close[0]}? " if close else "") + "types: " + ", ".join(MOUNT_TYPES),
        )
    if "readwrite" in opts:
        opts["readonly"] = "false" if _bool(opts.pop("readwrite"), "readwrite") else "true"
    target = opts.get("target", "")
    file_info = {k: opts[k] for k in ("mode", "uid", "gid") if k in opts}
    if kind not in ("cache", "secret", "ssh") and file_info:
        raise MountError(f"{next(iter(file_info))} not allowed for {kind!r} type mounts")
    if "sharing" in opts and kind != "cache":
        raise MountError(f"invalid cache sharing set for {kind} mount")
    if "required" in opts and kind not in ("secret", "ssh"):
        raise MountError(f"unexpected key 'required' for mount type '{kind}'")
    if "size" in opts and kind != "tmpfs":
        raise MountError(f"size not allowed for {kind!r} type mounts")
    if kind in ("bind", "cache", "tmpfs") and not target and strict:
        raise MountError(f"mount target is required for {kind} mounts", hint=f"add target=<path> to {spec!r}")
    mode = _int(file_info["mode"], "mode", 8) if "mode" in file_info else None
    uid = _int(file_info["uid"], "uid", 10) if "uid" in file_info else 0
    gid = _int(file_info["gid"], "gid", 10) if "gid" in file_info else 0
    readonly = _bool(opts["readonly"], "readonly") if "readonly" in opts else None
    source = opts.get("source", "")
    from_stage = opts.get("from") or None
    if kind == "bind":
        return BindMount(
            spec=spec,
            target=target,
            source=source,
            from_stage=from_stage,
            readonly=True if readonly is None else readonly,
        )
    if kind == "cache":
        sharing = opts.get("sharing", "shared") or "shared"
        if sharing not in ("shared", "private", "locked"):
            raise MountError(
                f"unrecognized sharing parameter {sharing!r}", hint="use shared, private or locked"
            )
        return CacheMount(
            spec=spec,
            target=target,
            id=opts.get("id") or target,
            sharing=sharing,  # type: ignore[arg-type]  # checked just above
            source=source,
            from_stage=from_stage,
            readonly=bool(readonly),
            mode=0o755 if mode is None else mode,
            uid=uid,
            gid=gid,
        )
    if kind == "tmpfs":
        return TmpfsMount(spec=spec, target=target, size=_size(opts["size"]) if "size" in opts else None)
    required = _bool(opts["required"], "required") if "required" in opts else False
    if kind == "secret":
        if from_stage:
            raise MountError("secret mount should not have a from")
        ident = opts.get("id", "")
        if source and ident:
            raise MountError("both source and id can't be set")
        ident = ident or source or posixpath.basename(target)
        if not ident and strict:
            raise MountError("one of source, target required", hint="add id=<secret id> or target=<path>")
        return SecretMount(
            spec=spec,
            id=ident,
            target=target or f"/run/secrets/{ident}",
            required=required,
            mode=0o400 if mode is None else mode,
            uid=uid,
            gid=gid,
        )
    return SshMount(
        spec=spec,
        id=opts.get("id") or "default",
        target=target,
        required=required,
        mode=0o600 if mode is None else mode,
        uid=uid,
        gid=gid,
    )


def _bool(value: str, key: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise MountError(f"invalid value for {key}: {value!r}", hint=f"use {key}=true or {key}=false")


def _int(value: str, key: str, base: int) -> int:
    try:
        number = int(value, base) if value.isascii() and value.isdigit() else -1
    except ValueError:
        number = -1
    if not 0 <= number < 2**32:
        kind = "an octal" if base == 8 else "a decimal"
        raise MountError(f"invalid value for {key}: {value!r}", hint=f"{key} takes {kind} number")
    return number


def _size(value: str) -> int:
    match = _SIZE.match(value.strip())
    if match is None:
        raise MountError(f"invalid size {value!r}", hint="write a size like 64m or 1g")
    unit = match[2].lower()
    return int(float(match[1]) * 1024 ** " kmgtp".index(unit or " "))
