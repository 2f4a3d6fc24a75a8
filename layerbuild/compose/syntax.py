"""Short syntax to long syntax, one value at a time: ports, volumes, secrets, configs, depends_on,
build, environment, healthcheck durations, command lines; each function is pure.

Relative paths are made absolute against `base` (the directory of the file that names them, or
the project directory for override files), as docker compose does.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from layerbuild.compose.yamlsrc import Reset

Lookup = Callable[[str], str | None]


class SyntaxProblem(ValueError):
    """A value whose syntax is wrong; the loader adds the file, line and key."""


def scalar_text(value: Any) -> str:
    """A YAML scalar as compose's text: `true`, `8080`, `1.5`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def key_values(value: Any, lookup: Lookup | None = None, *, sep: str = "=") -> dict[str, str | None]:
    """A `KEY=VALUE` list or a mapping as a mapping; a bare `KEY` takes `lookup(KEY)` (None if unset)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        out: dict[str, str | None] = {}
        for k, v in value.items():
            if isinstance(v, Reset):
                out[k] = v  # type: ignore[assignment]  # the merge removes it
                continue
            out[k] = scalar_text(v) if v is not None else (lookup(k) if lookup else None)
        return out
    out = {}
    for item in value:
        key, has, val = str(item).partition(sep)
        out[key] = val if has else (lookup(key) if lookup else None)
    return out


def command(value: Any) -> list[str] | None:
    """`command:`/`entrypoint:` as an argv list (a string is split like a shell would)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise SyntaxProblem(f"cannot split {value!r} into words: {exc}") from None
    return [scalar_text(v) for v in value]


def resolve_path(text: str, base: Path) -> str:
    """`text` made absolute against `base`; `~` is the home directory."""
    if text.startswith("~"):
        text = os.path.expanduser(text)
    return os.path.normpath(os.path.join(base, text))


def is_remote(context: str) -> bool:
    return bool(re.match(r"^(https?://|git://|git@|github\.com/|ssh://)", context)) or context.endswith(".git")


def build(value: Any, base: Path, lookup: Lookup) -> dict[str, Any]:
    spec: dict[str, Any] = {"context": value} if isinstance(value, str) else dict(value)
    context = str(spec.get("context", "."))
    spec["context"] = context if is_remote(context) else resolve_path(context, base)
    if "dockerfile_inline" not in spec:
        spec.setdefault("dockerfile", "Dockerfile")
    if "args" in spec:
        # an argument without a value takes the environment's, and is left out when unset
        spec["args"] = {k: v for k, v in key_values(spec["args"], lookup).items() if v is not None}
    for key in ("labels", "ssh"):
        if key in spec:
            spec[key] = key_values(spec[key])
    if "additional_contexts" in spec:
        contexts = {}
        for name, where in key_values(spec["additional_contexts"]).items():
            where = where or ""
            local = not (re.match(r"^[a-z][a-z0-9+.-]*://", where) or where.startswith("service:") or is_remote(where))
            contexts[name] = resolve_path(where, base) if local else where
        spec["additional_contexts"] = contexts
    if "secrets" in spec:
        spec["secrets"] = [service_ref(s) for s in spec["secrets"]]
    return spec


def service_ref(value: Any) -> dict[str, Any]:
    """A service's `secrets:`/`configs:` entry in long syntax."""
    if isinstance(value, str):
        return {"source": value}
    out = dict(value)
    if "mode" in out and isinstance(out["mode"], str):
        try:
            out["mode"] = int(out["mode"], 8)
        except ValueError:
            raise SyntaxProblem(f"invalid mode {out['mode']!r}: write an octal number such as 0440") from None
    return out


_PORT = re.compile(
    r"^(?:(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<pub>\d+(?:-\d+)?)?:)?"
    r"(?P<target>\d+(?:-\d+)?)(?:/(?P<proto>[a-z]+))?$")


def ports(value: Any) -> list[dict[str, Any]]:
    """One `ports:` entry as long-syntax entries (a range is one entry per port)."""
    if isinstance(value, dict):
        out = dict(value)
        out.setdefault("mode", "ingress")
        out.setdefault("protocol", "tcp")
        try:
            out["target"] = int(out["target"])
        except (KeyError, ValueError):
            raise SyntaxProblem("a port needs a numeric target") from None
        if "published" in out:
            out["published"] = scalar_text(out["published"])
        return [_ordered_port(out)]
    text = scalar_text(value)
    m = _PORT.match(text)
    if m is None:
        raise SyntaxProblem(f"invalid port {text!r}: write [IP:][HOST:]CONTAINER[/PROTOCOL], e.g. 8080:80")
    ip = (m.group("ip") or "").strip("[]")
    proto = m.group("proto") or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise SyntaxProblem(f"invalid protocol {proto!r} in port {text!r}: use tcp, udp or sctp")
    targets = _range(m.group("target"), text)
    pub = m.group("pub")
    pubs: list[str | None]
    if pub is None:
        pubs = [None] * len(targets)
    else:
        prange = _range(pub, text)
        if len(prange) == len(targets):
            pubs = [str(p) for p in prange]
        elif len(targets) == 1:
            pubs = [pub]
        else:
            raise SyntaxProblem(f"invalid port {text!r}: the host and container ranges differ in length")
    out_list = []
    for target, published in zip(targets, pubs):
        entry: dict[str, Any] = {"mode": "ingress", "host_ip": ip or None, "target": target,
                                 "published": published, "protocol": proto}
        out_list.append(_ordered_port(entry))
    return out_list


def _ordered_port(entry: dict[str, Any]) -> dict[str, Any]:
    order = ("name", "mode", "host_ip", "target", "published", "protocol", "app_protocol")
    out = {k: entry[k] for k in order if entry.get(k) is not None}
    out.update({k: v for k, v in entry.items() if k not in order})
    return out


def _range(text: str, whole: str) -> list[int]:
    lo, _, hi = text.partition("-")
    start, end = int(lo), int(hi or lo)
    if end < start or not 0 <= start <= 65535 or end > 65535:
        raise SyntaxProblem(f"invalid port range {text!r} in {whole!r}")
    return list(range(start, end + 1))


def volume(value: Any, base: Path) -> dict[str, Any]:
    """One service `volumes:` entry in long syntax."""
    if isinstance(value, dict):
        out = dict(value)
        if out.get("type") == "bind" and "source" in out:
            out["source"] = resolve_path(str(out["source"]), base)
        return out
    text = str(value)
    parts = text.split(":")
    # a Windows-like drive letter is not a separator here: this is Linux
    if len(parts) == 1:
        return {"type": "volume", "target": parts[0], "volume": {}}
    if len(parts) > 3:
        raise SyntaxProblem(f"invalid volume {text!r}: write SOURCE:TARGET[:MODE]")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else ""
    if not target:
        raise SyntaxProblem(f"invalid volume {text!r}: the target is empty")
    options = [o for o in mode.split(",") if o]
    for option in options:
        if option not in ("ro", "rw", "z", "Z", "nocopy", "shared", "rshared", "slave", "rslave", "private",
                          "rprivate", "cached", "delegated", "consistent"):
            raise SyntaxProblem(f"invalid mode {option!r} in volume {text!r}: use ro, rw, z, Z or nocopy")
    if source.startswith((".", "/", "~")):
        entry: dict[str, Any] = {"type": "bind", "source": resolve_path(source, base), "target": target}
        if "ro" in options:
            entry["read_only"] = True
        bind: dict[str, Any] = {"create_host_path": True}
        if "z" in options or "Z" in options:
            bind["selinux"] = "z" if "z" in options else "Z"
        for prop in ("shared", "rshared", "slave", "rslave", "private", "rprivate"):
            if prop in options:
                bind["propagation"] = prop
        entry["bind"] = bind
        return entry
    entry = {"type": "volume", "source": source, "target": target}
    if "ro" in options:
        entry["read_only"] = True
    entry["volume"] = {"nocopy": True} if "nocopy" in options else {}
    return entry


def depends_on(value: Any) -> dict[str, dict[str, Any]]:
    if isinstance(value, list):
        return {name: {"condition": "service_started", "required": True} for name in value}
    out = {}
    for name, spec in value.items():
        entry = {"condition": spec.get("condition", "service_started"), "required": _truth(spec.get("required", True))}
        if _truth(spec.get("restart", False)):
            entry["restart"] = True
        out[name] = entry
    return out


def _truth(value: Any) -> bool:
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise SyntaxProblem(f"invalid boolean {value!r}: write true or false")
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def networks(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {name: None for name in value}
    return {name: (dict(spec) if spec else None) for name, spec in value.items()}


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def duration(value: Any) -> str:
    """A Go-style duration (`1m30s`, `500ms`) checked and written as docker compose writes it."""
    text = scalar_text(value).strip()
    if text == "0":
        return "0s"
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise SyntaxProblem(f"invalid duration {text!r}: write e.g. 30s, 1m30s or 500ms")
    return format_duration(int(total))


def format_duration(ns: int) -> str:
    """Go's time.Duration.String(): `1h2m3s`, `1.5s`, `500ms`."""
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return _trim(ns / size) + unit
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return out + _trim(rest / 10**9) + "s"


def _trim(number: float) -> str:
    return f"{number:.9f}".rstrip("0").rstrip(".")


def healthcheck(value: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(value)
    test = out.get("test")
    if isinstance(test, str):
        out["test"] = ["CMD-SHELL", test]
    elif isinstance(test, list) and test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        raise SyntaxProblem(f"healthcheck test must start with CMD, CMD-SHELL or NONE, not {test[0]!r}")
    for key in ("interval", "timeout", "start_period", "start_interval"):
        if key in out:
            out[key] = duration(out[key])
    if "retries" in out:
        try:
            out["retries"] = int(out["retries"])
        except (TypeError, ValueError):
            raise SyntaxProblem(f"invalid retries {out['retries']!r}: write a whole number") from None
    if "disable" in out:
        out["disable"] = _truth(out["disable"])
    return out


_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")


def restart(value: Any) -> str:
    text = scalar_text(value)
    if not _RESTART.match(text):
        raise SyntaxProblem(f"invalid restart policy {text!r}: use no, always, on-failure[:N] or unless-stopped")
    return text
