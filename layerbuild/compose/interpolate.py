"""Variable interpolation in compose files: `$VAR`, `${VAR}`, defaults, required and alternative values.

The forms of the Compose Specification: `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
`${VAR:?error}` / `${VAR?error}` (required), `${VAR:+alt}` / `${VAR+alt}` (replacement when set),
nested in defaults (`${A:-${B:-c}}`), and `$$` for a literal `$`. Only values are interpolated, never
keys. An unset variable without a default is the empty string, with a warning, as docker compose does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A template that cannot be interpolated; the message is in plain words."""


def interpolate(text: str, env: Mapping[str, str], warn: Callable[[str], None] | None = None) -> str:
    """`text` with every variable replaced from `env`; InterpolationError for a bad template or a
    required variable that is missing."""
    if "$" not in text:
        return text
    return _expand(text, 0, env, warn, top=True)[0]


def _expand(text: str, pos: int, env: Mapping[str, str], warn: Callable[[str], None] | None,
            *, top: bool) -> tuple[str, int]:
    """Expand from `pos` to the end (top level) or to the `}` closing a nested default."""
    out: list[str] = []
    depth = 0
    while pos < len(text):
        ch = text[pos]
        if not top and ch == "}" and depth == 0:
            return "".join(out), pos
        if not top and ch == "{":  # a literal brace inside a default keeps nested braces balanced
            depth += 1
        elif not top and ch == "}":
            depth -= 1
        if ch != "$":
            out.append(ch)
            pos += 1
            continue
        nxt = text[pos + 1] if pos + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            pos += 2
        elif nxt == "{":
            value, pos = _braced(text, pos + 2, env, warn)
            out.append(value)
        elif (m := _NAME.match(text, pos + 1)) is not None:
            out.append(_lookup(m.group(0), env, warn))
            pos = m.end()
        else:
            raise InterpolationError(f"invalid interpolation format for {text!r}: a lone '$' "
                                     "(write $$ for a literal dollar sign)")
    if not top:
        raise InterpolationError(f"invalid interpolation format for {text!r}: missing closing '}}'")
    return "".join(out), pos


def _braced(text: str, pos: int, env: Mapping[str, str], warn: Callable[[str], None] | None) -> tuple[str, int]:
    """`${...}` starting after the brace; returns the value and the position after the closing `}`."""
    m = _NAME.match(text, pos)
    if m is None:
        raise InterpolationError(f"invalid interpolation format for {text!r}: "
                                 "'${' must be followed by a variable name")
    name, pos = m.group(0), m.end()
    if pos >= len(text):
        raise InterpolationError(f"invalid interpolation format for {text!r}: missing closing '}}'")
    if text[pos] == "}":
        return _lookup(name, env, warn), pos + 1
    colon = text[pos] == ":"
    op_at = pos + 1 if colon else pos
    op = text[op_at] if op_at < len(text) else ""
    if op not in "-?+" or not op:
        raise InterpolationError(f"invalid interpolation format for {text!r}: "
                                 f"unexpected {text[pos:pos + 2]!r} after ${{{name}")
    arg, end = _expand(text, op_at + 1, env, warn, top=False)
    value = env.get(name)
    missing = value is None or (colon and value == "")
    if op == "-":
        result = arg if missing else value
    elif op == "+":
        result = "" if missing else arg
    else:
        if missing:
            why = arg or ("is not set" if value is None else "is empty")
            raise InterpolationError(f"required variable {name} is missing a value: {why}")
        result = value
    return result or "", end + 1


def _lookup(name: str, env: Mapping[str, str], warn: Callable[[str], None] | None) -> str:
    value = env.get(name)
    if value is None:
        if warn is not None:
            warn(f'The "{name}" variable is not set. Defaulting to a blank string.')
        return ""
    return value
