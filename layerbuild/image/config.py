"""The OCI image config as frozen values (with Docker's Healthcheck/OnBuild/Shell), edited by returning copies."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from layerbuild.errors import LayerbuildError, UsageError

_PROTOCOLS = ("tcp", "udp", "sctp")
_PORT_RE = re.compile(r"^(\d+)(?:-(\d+))?$")
_FRACTION_RE = re.compile(r"\.(\d{6})\d+")


class ImageFormatError(LayerbuildError):
    """A manifest or config that is not valid JSON of the expected shape."""


def normalize_port(spec: str) -> tuple[str, ...]:
    """An EXPOSE argument as ExposedPorts keys, the way Docker's `nat.ParsePortSpecs` reads it.

    `80` → `80/tcp`; the protocol is lower-cased; a range `8000-8002/udp` is expanded into its ports;
    `ip:host:container` keeps only the container port, which is all an image config records.
    """
    text = spec.strip()
    port, sep, proto = text.rpartition("/") if "/" in text else (text, "", "tcp")
    proto = proto.lower() if sep else "tcp"
    port = port.rsplit(":", 1)[-1]
    match = _PORT_RE.match(port)
    if proto not in _PROTOCOLS or match is None:
        raise UsageError(f"invalid port {spec!r}", hint="write PORT[/tcp|udp|sctp] or START-END[/PROTO]")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if not 0 < first <= last <= 65535:
        raise UsageError(f"invalid port range {spec!r}", hint="ports run from 1 to 65535")
    return tuple(f"{p}/{proto}" for p in range(first, last + 1))


def format_created(seconds: float) -> str:
    """A time as the config's `created` string: RFC 3339 in UTC, whole seconds (reproducible builds)."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_created(text: str | None) -> datetime | None:
    """A `created` string (RFC 3339, Go's nanoseconds allowed) as an aware datetime; None if unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(_FRACTION_RE.sub(r".\1", text.replace("Z", "+00:00")))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _strs(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(value) if value is not None else ()


@dataclass(frozen=True)
class Healthcheck:
    """Docker's HEALTHCHECK settings; durations are integer nanoseconds, 0 meaning "inherit the default"."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", _strs(self.test))


@dataclass(frozen=True)
class ContainerConfig:
    """The `config` object: how a container runs by default. Canonical by construction.

    Exposed ports are normalised (`80` → `80/tcp`), de-duplicated and sorted, volumes are a sorted set,
    labels sorted `(key, value)` pairs with one value per key; an empty Cmd/Entrypoint/Shell is None
    (BuildKit omits an empty list and an unset one alike). Env keeps Docker's order of first definition.
    """

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    shell: tuple[str, ...] | None = None
    on_build: tuple[str, ...] = ()
    args_escaped: bool = False

    def __post_init__(self) -> None:
        ports = {p for spec in self.exposed_ports for p in normalize_port(spec)}
        set_ = object.__setattr__
        set_(self, "exposed_ports", tuple(sorted(ports, key=_port_key)))
        set_(self, "env", _strs(self.env))
        set_(self, "volumes", tuple(sorted(set(self.volumes))))
        set_(self, "labels", tuple(sorted(dict(self.labels).items())))
        set_(self, "on_build", _strs(self.on_build))
        for name in ("entrypoint", "cmd", "shell"):
            value = getattr(self, name)
            set_(self, name, tuple(value) if value else None)

    # reads -------------------------------------------------------------------------------------------

    def env_dict(self) -> dict[str, str]:
        """Env as a mapping, in order; an entry without `=` counts as an empty value."""
        return dict(_split_env(e) for e in self.env)

    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)

    # edits (each returns a new config) -----------------------------------------------------------------

    def with_env(self, key: str, value: str) -> ContainerConfig:
        """Set `key`: its entry is replaced where it stands, or appended, as Docker's ENV does."""
        entry = f"{key}={value}"
        env = list(self.env)
        for i, existing in enumerate(env):
            if _split_env(existing)[0] == key:
                env[i] = entry
                break
        else:
            env.append(entry)
        return replace(self, env=tuple(env))

    def with_labels(self, labels: Mapping[str, str]) -> ContainerConfig:
        return replace(self, labels=tuple({**dict(self.labels), **labels}.items()))

    def with_exposed_ports(self, *specs: str) -> ContainerConfig:
        return replace(self, exposed_ports=self.exposed_ports + specs)

    def with_volumes(self, *paths: str) -> ContainerConfig:
        return replace(self, volumes=self.volumes + paths)

    def with_on_build(self, trigger: str) -> ContainerConfig:
        return replace(self, on_build=(*self.on_build, trigger))


def _split_env(entry: str) -> tuple[str, str]:
    key, _, value = entry.partition("=")
    return key, value


def _port_key(port: str) -> tuple[int, str]:
    number, _, proto = port.partition("/")
    return int(number), proto


@dataclass(frozen=True)
class HistoryEntry:
    """One step in the image's history; `empty_layer` marks a step that changed only the config."""

    created: str | None = None
    created_by: str = ""
    empty_layer: bool = False
    comment: str = ""
    author: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "created", self.created or None)


@dataclass(frozen=True)
class ImageConfig:
    """The whole config blob: platform, run config, the layers' diff_ids (base first) and history."""

    architecture: str
    os: str
    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    created: str | None = None
    variant: str | None = None
    author: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    # Top-level fields of layerbuild's own (`layerbuild.cache.v1`: an inline build cache), each as its
    # canonical JSON text, sorted by name. A child image's build starts without its base's.
    extensions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(sorted((str(k), str(v)) for k, v in self.extensions)))
        for name in ("created", "variant", "author", "os_version"):  # "" is written as absent
            object.__setattr__(self, name, getattr(self, name) or None)
        object.__setattr__(self, "diff_ids", _strs(self.diff_ids))
        object.__setattr__(self, "history", tuple(self.history))
        object.__setattr__(self, "os_features", _strs(self.os_features))

    # edits -----------------------------------------------------------------------------------------

    def with_config(self, **changes: Any) -> ImageConfig:
        """A copy whose run config has `changes` (ContainerConfig field names) applied."""
        return replace(self, config=replace(self.config, **changes))

    def with_env(self, key: str, value: str) -> ImageConfig:
        return replace(self, config=self.config.with_env(key, value))

    def with_layer(self, diff_id: str, entry: HistoryEntry) -> ImageConfig:
        """A copy with one more layer on top and its history entry (marked as adding a layer)."""
        return replace(
            self,
            diff_ids=(*self.diff_ids, diff_id),
            history=(*self.history, replace(entry, empty_layer=False)),
        )

    def with_history(self, entry: HistoryEntry) -> ImageConfig:
        """A copy with a history entry for a config-only step (always recorded as `empty_layer`)."""
        return replace(self, history=(*self.history, replace(entry, empty_layer=True)))

    def env_dict(self) -> dict[str, str]:
        return self.config.env_dict()

    def layer_history(self) -> tuple[tuple[HistoryEntry, str | None], ...]:
        """Each history entry with the diff_id of the layer it added (None for empty_layer steps).

        Pairs them as Docker does: the n-th non-empty entry goes with the n-th diff_id. Configs
        written without history (or with too little) get placeholder entries for the extra layers.
        """
        pending = list(self.diff_ids)
        out: list[tuple[HistoryEntry, str | None]] = []
        for entry in self.history:
            out.append((entry, None if entry.empty_layer or not pending else pending.pop(0)))
        out.extend((HistoryEntry(), d) for d in pending)
        return tuple(out)

    # JSON ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        from layerbuild.image.configjson import image_to_dict

        return image_to_dict(self)

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, no spaces, ASCII; empty fields omitted as BuildKit omits them."""
        from layerbuild.image.configjson import canonical_json, image_to_dict

        return canonical_json(image_to_dict(self))

    @classmethod
    def from_dict(cls, data: Any) -> ImageConfig:
        from layerbuild.image.configjson import image_from_dict

        return image_from_dict(data)

    @classmethod
    def from_json(cls, data: bytes | str) -> ImageConfig:
        """Read any image config (OCI, BuildKit's or the Docker engine's); unknown fields are ignored."""
        from layerbuild.image.configjson import load_json

        return cls.from_dict(load_json(data, "image config"))
