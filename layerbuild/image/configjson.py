"""Image config ⇄ JSON: BuildKit's omission rules on the way out, a tolerant reader of every dialect on the way in.

Writing follows the Go structs BuildKit serialises (`ocispec.Image` with Docker's config extension), so
the fields present are the ones `omitempty` keeps: empty strings, lists, maps, zero durations and false
booleans are left out, `config` and `rootfs` are always present. Unlike Go, an image without layers gets
`"diff_ids": []` (the OCI schema requires an array; Go would write null). Keys are sorted and the
output is compact ASCII so that equal configs are equal bytes.

Reading accepts the Docker engine's dialect too (`"Cmd": null`, `"Labels": null`, `Hostname`,
`container_config`, ...): null counts as absent and unknown fields are ignored, as BuildKit does when
it reads a base image.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from layerbuild.digest import is_sha256_digest
from layerbuild.errors import UsageError
from layerbuild.image.config import (
    ContainerConfig,
    Healthcheck,
    HistoryEntry,
    ImageConfig,
    ImageFormatError,
)

T = TypeVar("T")


EXTENSION_PREFIX = "layerbuild."  # top-level config fields of ours, kept when a config is read


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def load_json(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageFormatError(f"{what} is not valid JSON: {exc}") from None


# --- writing ------------------------------------------------------------------------------------------


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value:  # omitempty: "", 0, False, None, [] and {} are all left out
        out[key] = value


def healthcheck_to_dict(h: Healthcheck) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "Test", list(h.test))
    _put(out, "Interval", h.interval)
    _put(out, "Timeout", h.timeout)
    _put(out, "StartPeriod", h.start_period)
    _put(out, "StartInterval", h.start_interval)
    _put(out, "Retries", h.retries)
    return out


def container_to_dict(c: ContainerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "User", c.user)
    _put(out, "ExposedPorts", {p: {} for p in c.exposed_ports})
    _put(out, "Env", list(c.env))
    _put(out, "Entrypoint", list(c.entrypoint or ()))
    _put(out, "Cmd", list(c.cmd or ()))
    _put(out, "Volumes", {v: {} for v in c.volumes})
    _put(out, "WorkingDir", c.working_dir)
    _put(out, "Labels", dict(c.labels))
    _put(out, "StopSignal", c.stop_signal)
    _put(out, "ArgsEscaped", c.args_escaped)
    if c.healthcheck is not None:  # a pointer in Go: present even when all its fields are empty
        out["Healthcheck"] = healthcheck_to_dict(c.healthcheck)
    _put(out, "OnBuild", list(c.on_build))
    _put(out, "Shell", list(c.shell or ()))
    return out


def history_to_dict(h: HistoryEntry) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "created", h.created)
    _put(out, "created_by", h.created_by)
    _put(out, "author", h.author)
    _put(out, "comment", h.comment)
    _put(out, "empty_layer", h.empty_layer)
    return out


def image_to_dict(img: ImageConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"architecture": img.architecture, "os": img.os}
    _put(out, "created", img.created)
    _put(out, "author", img.author)
    _put(out, "variant", img.variant)
    _put(out, "os.version", img.os_version)
    _put(out, "os.features", list(img.os_features))
    out["config"] = container_to_dict(img.config)
    out["rootfs"] = {"type": "layers", "diff_ids": list(img.diff_ids)}
    _put(out, "history", [history_to_dict(h) for h in img.history])
    for name, text in img.extensions:
        out[name] = json.loads(text)
    return out


# --- reading ------------------------------------------------------------------------------------------


class _Reader:
    """Typed access to one JSON object, naming the field in every error."""

    def __init__(self, data: Any, where: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ImageFormatError(f"{where} must be a JSON object, not {type(data).__name__}")
        self.data = data
        self.where = where

    def _get(self, key: str, kind: type[T] | tuple[type, ...], what: str) -> T | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ImageFormatError(f"{self.where}.{key} must be {what}")
        return value  # type: ignore[return-value]

    def text(self, key: str, default: str = "") -> str:
        value = self._get(key, str, "a string")
        return default if value is None else value

    def opt_text(self, key: str) -> str | None:
        return self._get(key, str, "a string")

    def integer(self, key: str) -> int:
        return self._get(key, int, "an integer") or 0

    def flag(self, key: str) -> bool:
        return bool(self._get(key, bool, "true or false"))

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list, "a list of strings") or []
        if not all(isinstance(v, str) for v in value):
            raise ImageFormatError(f"{self.where}.{key} must be a list of strings")
        return tuple(value)

    def keys(self, key: str) -> tuple[str, ...]:
        """A Go `map[string]struct{}` (ExposedPorts, Volumes): only the keys mean anything."""
        return tuple(self._get(key, dict, "an object") or {})

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key, dict, "an object of strings") or {}
        if not all(isinstance(v, str) for v in value.values()):
            raise ImageFormatError(f"{self.where}.{key} must be an object of strings")
        return dict(value)

    def obj(self, key: str, parse: Callable[[_Reader], T]) -> T | None:
        value = self.data.get(key)
        return None if value is None else parse(_Reader(value, f"{self.where}.{key}"))


def healthcheck_from(r: _Reader) -> Healthcheck:
    return Healthcheck(
        test=r.texts("Test"),
        interval=r.integer("Interval"),
        timeout=r.integer("Timeout"),
        start_period=r.integer("StartPeriod"),
        start_interval=r.integer("StartInterval"),
        retries=r.integer("Retries"),
    )


def container_from(r: _Reader) -> ContainerConfig:
    try:
        return ContainerConfig(
            user=r.text("User"),
            exposed_ports=r.keys("ExposedPorts"),
            env=r.texts("Env"),
            entrypoint=r.texts("Entrypoint") or None,
            cmd=r.texts("Cmd") or None,
            volumes=r.keys("Volumes"),
            working_dir=r.text("WorkingDir"),
            labels=tuple(r.str_map("Labels").items()),
            stop_signal=r.text("StopSignal"),
            healthcheck=r.obj("Healthcheck", healthcheck_from),
            shell=r.texts("Shell") or None,
            on_build=r.texts("OnBuild"),
            args_escaped=r.flag("ArgsEscaped"),
        )
    except UsageError as exc:  # a malformed port key
        raise ImageFormatError(f"{r.where}: {exc.message}") from None


def history_from(r: _Reader) -> HistoryEntry:
    return HistoryEntry(
        created=r.opt_text("created"),
        created_by=r.text("created_by"),
        empty_layer=r.flag("empty_layer"),
        comment=r.text("comment"),
        author=r.text("author"),
    )


def image_from_dict(data: Any) -> ImageConfig:
    r = _Reader(data, "config")
    if not isinstance(data, dict):
        raise ImageFormatError("image config must be a JSON object")
    rootfs = _Reader(data.get("rootfs"), "rootfs")
    rootfs_type = rootfs.text("type", "layers")
    if rootfs_type != "layers":
        raise ImageFormatError(f"rootfs.type is {rootfs_type!r}; only 'layers' exists")
    diff_ids = rootfs.texts("diff_ids")
    for d in diff_ids:
        if not is_sha256_digest(d):
            raise ImageFormatError(f"rootfs.diff_ids has {d!r}, which is not a sha256 digest")
    history = data.get("history")
    history = [] if history is None else history
    if not isinstance(history, list):
        raise ImageFormatError("history must be a list")
    return ImageConfig(
        architecture=r.text("architecture"),
        os=r.text("os"),
        config=r.obj("config", container_from) or ContainerConfig(),
        diff_ids=diff_ids,
        history=tuple(history_from(_Reader(h, f"history[{i}]")) for i, h in enumerate(history)),
        created=r.opt_text("created"),
        variant=r.opt_text("variant") or None,
        author=r.opt_text("author") or None,
        os_version=r.opt_text("os.version") or None,
        os_features=r.texts("os.features"),
        extensions=tuple((k, canonical_json(v).decode()) for k, v in data.items() if k.startswith(EXTENSION_PREFIX)),
    )
