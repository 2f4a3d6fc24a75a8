"""Instruction flags (`--name=value`) checked against what each instruction takes, and Go-style durations."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

FlagKind = Literal["bool", "string", "strings"]


class FlagError(ValueError):
    """A flag problem; `flag` is the text to point at in the source line, `hint` a suggestion."""

    def __init__(self, message: str, *, flag: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.flag = flag
        self.hint = hint


@dataclass(frozen=True)
class Flags:
    """The flags of one instruction after parsing, with their `--name=value` text for locations."""

    bools: Mapping[str, bool] = field(default_factory=dict)
    strings: Mapping[str, str] = field(default_factory=dict)
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    written: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.strings.get(name)

    def flag(self, name: str) -> bool:
        return self.bools.get(name, False)

    def many(self, name: str) -> tuple[str, ...]:
        return self.lists.get(name, ())


def describe(keyword: str, allowed: Mapping[str, FlagKind]) -> str:
    """A hint listing the flags `keyword` takes."""
    if not allowed:
        return f"{keyword} takes no flags"
    return f"{keyword} takes " + ", ".join(f"--{name}" for name in sorted(allowed))


def parse_flags(keyword: str, written: Sequence[str], allowed: Mapping[str, FlagKind]) -> Flags:
    """Check `written` (as the parser keeps them: `--name` or `--name=value`) like BuildKit's BFlags."""
    bools: dict[str, bool] = {}
    strings: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for text in written:
        if not text.startswith("--"):
            raise FlagError(f"arg should start with -- : {text}", flag=text)
        if text == "--":
            break
        name, eq, value = text[2:].partition("=")
        kind = allowed.get(name)
        if kind is None:
            hint = describe(keyword, allowed)
            close = _closest(name, allowed)
            if close:
                hint = f"did you mean --{close}? {hint}"
            raise FlagError(f"unknown flag: {name}", flag="--" + name, hint=hint)
        if name in seen and kind != "strings":
            raise FlagError(f"duplicate flag specified: {name}", flag=text)
        seen[name] = text
        if kind == "bool":
            if eq and not value:
                raise FlagError(f"missing a value on flag: {name}", flag=text)
            lowered = value.lower()
            if lowered in ("", "true"):
                bools[name] = True
            elif lowered == "false":
                bools[name] = False
            else:
                raise FlagError(f"expecting boolean value for flag {name}, not: {value}", flag=text)
        elif not eq:
            raise FlagError(
                f"missing a value on flag: {name}", flag=text, hint=f"write it as --{name}=<value>"
            )
        elif kind == "string":
            strings[name] = value
        else:
            lists.setdefault(name, []).append(value)
    return Flags(
        bools=bools,
        strings=strings,
        lists={name: tuple(values) for name, values in lists.items()},
        written=seen,
    )


def _closest(name: str, allowed: Mapping[str, FlagKind]) -> str | None:
    import difflib

    found = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return found[0] if found else None


_UNITS_NS = {
    "ns": Decimal(1),
    "us": Decimal(1_000),
    "µs": Decimal(1_000),  # U+00B5 micro sign
    "μs": Decimal(1_000),  # U+03BC Greek mu
    "ms": Decimal(1_000_000),
    "s": Decimal(1_000_000_000),
    "m": Decimal(60_000_000_000),
    "h": Decimal(3_600_000_000_000),
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_NS = 2**63 - 1


def parse_duration(text: str) -> int:
    """Go's `time.ParseDuration`, in nanoseconds: `1h30m`, `1.5s`, `300ms`, `-2s`, `0`."""
    body = text
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        try:
            total += Decimal(match[1]) * _UNITS_NS[match[2]]
        except InvalidOperation:
            raise ValueError(f"invalid duration {text!r}") from None
        pos = match.end()
    if total > _MAX_NS:
        raise ValueError(f"invalid duration {text!r}")
    return sign * int(total)
