"""Text rules of the official parser's language (Go), so our splitting matches it character for character.

BuildKit's parser is written in Go; where its behaviour depends on Go's notion of white space,
lower-casing or on scanning bytes rather than characters, these helpers reproduce it in Python.
"""

from __future__ import annotations

import re

# Go's unicode.IsSpace: ASCII \t \n \v \f \r and space, U+0085, U+00A0, and the Unicode
# categories Zs/Zl/Zp. Python's str.isspace also counts U+001C..U+001F, which Go does not.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# The same predicate applied to single *bytes* (Go code that does `rune(s[i])`): Latin-1 view.
GO_BYTE_SPACE = "\t\n\v\f\r \x85\xa0"
# BuildKit's reWhitespace: `[\t\v\f\r ]+` (ASCII only, no newline).
WHITESPACE_RE = re.compile(r"[\t\v\f\r ]+")


def trim_space(text: str) -> str:
    """strings.TrimSpace."""
    return text.strip(GO_SPACE)


def trim_left_space(text: str) -> str:
    """strings.TrimLeftFunc(s, unicode.IsSpace)."""
    return text.lstrip(GO_SPACE)


def lower(text: str) -> str:
    """strings.ToLower: per-character simple case mapping (Python's str.lower is the full mapping)."""
    if text.isascii():
        return text.lower()
    out = []
    for ch in text:
        low = ch.lower()
        out.append(low if len(low) == 1 else low[0])
    return "".join(out)


def byte_view(text: str) -> str:
    """The UTF-8 bytes of `text`, one character per byte (Latin-1), for byte-wise Go scanners."""
    return text.encode("utf-8", "surrogateescape").decode("latin-1")


def from_byte_view(view: str) -> str:
    """Inverse of byte_view; a cut through a multi-byte character survives as surrogate escapes."""
    return view.encode("latin-1").decode("utf-8", "surrogateescape")


def split_whitespace(text: str, limit: int = 0) -> list[str]:
    """regexp.Split(text, n) with reWhitespace; `limit` 0 means no limit (Go's -1)."""
    if text == "":
        return [""]
    return WHITESPACE_RE.split(text, maxsplit=max(limit - 1, 0))
