"""`.env` and `env_file` files: `KEY=VALUE` lines as docker compose reads them.

`export KEY=VALUE` is accepted; `#` starts a comment (after a space, when the value is unquoted);
single quotes are literal, double quotes take `\\n`, `\\t`, `\\"` and `\\\\` escapes and may span lines;
unquoted and double-quoted values are interpolated from the variables read so far and `lookup`;
a bare `KEY` takes the value `lookup` has for it, or is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from layerbuild.compose.interpolate import InterpolationError, interpolate
from layerbuild.errors import ComposeFileError

_KEY = re.compile(r"\s*(?:export\s+)?([A-Za-z_.][A-Za-z0-9_.\-]*)\s*(=?)\s*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "\\$"}


def read_env_file(path: Path, shown: str, lookup: Callable[[str], str | None]) -> dict[str, str]:
    """The variables of the file at `path` (named `shown` in errors), in order."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComposeFileError(f"env file {shown} not found", hint="create it, or mark it `required: false`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeFileError(f"cannot read env file {shown}: {exc}") from None
    return parse_env(text, shown, lookup)


def parse_env(text: str, shown: str, lookup: Callable[[str], str | None]) -> dict[str, str]:
    values: dict[str, str] = {}

    class _Env(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            if key in values:
                return values[key]
            found = lookup(key)
            if found is None:
                raise KeyError(key)
            return found

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(values)

        def __len__(self) -> int:
            return len(values)

    env = _Env()
    pos, lineno = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end]
        start_line = lineno
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            pos, lineno = end + 1, lineno + 1
            continue
        m = _KEY.match(line)
        if m is None:
            raise ComposeFileError(f"unexpected character in variable name {stripped!r}",
                                   filename=shown, line=start_line, hint="write KEY=VALUE")
        key, eq = m.group(1), m.group(2)
        rest_at = pos + m.end()
        if not eq:
            if line[m.end():].strip() and not line[m.end():].strip().startswith("#"):
                raise ComposeFileError(f"unexpected text after {key!r}", filename=shown, line=start_line,
                                       hint="write KEY=VALUE")
            found = lookup(key)
            if found is not None:
                values[key] = found
            pos, lineno = end + 1, lineno + 1
            continue
        quote = text[rest_at] if rest_at < len(text) else ""
        if quote in ("'", '"'):
            close = _closing(text, rest_at + 1, quote)
            if close < 0:
                raise ComposeFileError(f"unterminated quoted value of {key}", filename=shown, line=start_line)
            raw = text[rest_at + 1:close]
            lineno += raw.count("\n")
            value = raw if quote == "'" else _interp(_unescape(raw), env, shown, start_line)
            end = text.find("\n", close)
            end = len(text) if end < 0 else end
        else:
            raw = text[rest_at:end]
            hash_at = raw.find(" #")
            if hash_at >= 0:
                raw = raw[:hash_at]
            value = _interp(raw.strip(), env, shown, start_line)
        values[key] = value
        pos, lineno = end + 1, lineno + 1
    return values


def _closing(text: str, pos: int, quote: str) -> int:
    while pos < len(text):
        if text[pos] == "\\" and quote == '"':
            pos += 2
            continue
        if text[pos] == quote:
            return pos
        pos += 1
    return -1


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), raw)


def _interp(raw: str, env: Mapping[str, str], shown: str, line: int) -> str:
    try:
        return interpolate(raw.replace("\\$", "$$"), env)
    except InterpolationError as exc:
        raise ComposeFileError(str(exc), filename=shown, line=line) from None
