"""The exec (JSON array) form, decoded the way BuildKit's Go JSON decoder decodes it."""

from __future__ import annotations

import json
import math
import re

from layerbuild.parser.gotext import trim_left_space

NOT_STRING_ARRAY = "when using JSON array syntax, arrays must be comprised of strings only"

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class NotJSON(Exception):
    """The text is not a JSON array: the instruction falls back to the shell form."""


class NotStringArray(Exception):
    """A JSON array holding something other than strings: an error in the official parser."""


def _reject_constant(name: str) -> float:
    # Go's decoder knows no NaN/Infinity literals.
    raise NotJSON(name)


def _go_float(text: str) -> float:
    # Go decodes numbers into float64 and fails on overflow, which makes the whole line shell form.
    value = float(text)
    if math.isinf(value):
        raise NotJSON(text)
    return value


_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_go_float, parse_int=_go_float, strict=True
)


def parse_json_array(rest: str) -> list[str]:
    """Decode `rest` as a JSON array of strings, ignoring whatever text follows the array.

    Raises NotJSON when the official parser would fall back to the shell form, and
    NotStringArray when it would reject the instruction.
    """
    text = trim_left_space(rest)
    if not text.startswith("["):
        raise NotJSON(text)
    try:
        value, _end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError) as exc:
        raise NotJSON(str(exc)) from None
    if not isinstance(value, list):
        raise NotJSON(text)
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise NotStringArray(NOT_STRING_ARRAY)
        # Go turns unpaired \uD800-style escapes into U+FFFD; Python keeps the lone surrogate.
        # Surrogates that stand for undecodable input bytes cannot come from a JSON escape here,
        # because the decoder only sees them as literal characters, which Go would also replace.
        out.append(_SURROGATE_RE.sub("\ufffd", item))
    return out
