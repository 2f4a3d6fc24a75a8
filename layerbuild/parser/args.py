"""How each instruction's arguments are split: BuildKit's per-keyword line parsers.

Each parser takes the text after the keyword and its flags and returns the argument list and
whether it came from the JSON (exec) form. They raise ArgumentError for what the official parser
rejects; the caller adds the location.
"""

from __future__ import annotations

from collections.abc import Callable

from layerbuild.parser import gotext
from layerbuild.parser.jsonform import NotJSON, NotStringArray, parse_json_array


class ArgumentError(Exception):
    """The arguments of one instruction are malformed; `hint` says how to fix them."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


Args = tuple[tuple[str, ...], bool]
LineParser = Callable[[str, str], Args]


def maybe_json(rest: str, escape: str) -> Args:
    """RUN, CMD, ENTRYPOINT, SHELL: the JSON array, else the whole text as one argument."""
    if rest == "":
        return (), False
    try:
        return tuple(parse_json_array(rest)), True
    except NotJSON:
        return (rest,), False
    except NotStringArray as exc:
        raise ArgumentError(str(exc), hint='write each element as a JSON string: ["echo", "hi"]') from None


def maybe_json_to_list(rest: str, escape: str) -> Args:
    """ADD, COPY, VOLUME: the JSON array, else whitespace-separated words."""
    try:
        return tuple(parse_json_array(rest)), True
    except NotJSON:
        return whitespace_delimited(rest, escape)
    except NotStringArray as exc:
        raise ArgumentError(str(exc), hint='write each element as a JSON string: ["src", "/dest/"]') from None


def whitespace_delimited(rest: str, escape: str) -> Args:
    """FROM, EXPOSE: words split on ASCII white space."""
    if rest == "":
        return (), False
    return tuple(gotext.split_whitespace(rest)), False


def single_string(rest: str, escape: str) -> Args:
    """MAINTAINER, USER, WORKDIR, STOPSIGNAL: the rest of the line as one argument."""
    if rest == "":
        return (), False
    return (rest,), False


def ignore(rest: str, escape: str) -> Args:
    """An unknown keyword: kept, with one empty argument, as the official parser keeps it."""
    return ("",), False


def parse_words(rest: str, escape: str) -> list[str]:
    """Split on white space, keeping quotes and escapes in the words (BuildKit's parseWords)."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    while pos < n:
        ch = rest[pos]
        if not in_word and not quote:
            if ch in gotext.GO_SPACE:
                pos += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            # Nothing can be escaped inside single quotes.
            if ch == escape and quote != "'":
                if pos + 1 == n:
                    quote = ""
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        # In a word, outside quotes.
        if ch in gotext.GO_SPACE:
            in_word = False
            if blank_ok or word:
                words.append("".join(word))
            word = []
            blank_ok = False
            pos += 1
            continue
        if ch in "'\"":
            quote = ch
            blank_ok = True
        if ch == escape:
            if pos + 1 == n:
                pos += 1
                continue
            # An escape outside quotes keeps both itself and the next character, even a quote.
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    if (in_word or quote) and (blank_ok or word):
        words.append("".join(word))
    return words


def _name_val(rest: str, escape: str, keyword: str) -> Args:
    words = parse_words(rest, escape)
    if not words:
        return (), False
    if "=" not in words[0]:
        # Legacy form: `ENV name value with spaces`.
        parts = gotext.split_whitespace(rest, 2)
        if len(parts) < 2:
            raise ArgumentError(
                f"{keyword} must have two arguments",
                hint=f"write {keyword} name=value (or {keyword} name value)",
            )
        return (parts[0], parts[1]), False
    out: list[str] = []
    for word in words:
        if "=" not in word:
            raise ArgumentError(
                f"Syntax error - can't find = in {_go_quote(word)}. Must be of the form: name=value",
                hint="quote values that contain spaces: name=\"a b\"",
            )
        key, _, value = word.partition("=")
        out += [key, value]
    return tuple(out), False


def env(rest: str, escape: str) -> Args:
    return _name_val(rest, escape, "ENV")


def label(rest: str, escape: str) -> Args:
    return _name_val(rest, escape, "LABEL")


def name_or_name_val(rest: str, escape: str) -> Args:
    """ARG: words, not split at `=`."""
    return tuple(parse_words(rest, escape)), False


def health_config(rest: str, escape: str) -> Args:
    """HEALTHCHECK: the first word (CMD, NONE), then the rest as for CMD."""
    view = gotext.byte_view(rest)  # the official parser scans bytes here
    sep = 0
    while sep < len(view) and view[sep] not in gotext.GO_BYTE_SPACE:
        sep += 1
    nxt = sep
    while nxt < len(view) and view[nxt] in gotext.GO_BYTE_SPACE:
        nxt += 1
    if sep == 0:
        return (), False
    kind = gotext.from_byte_view(view[:sep])
    args, is_json = maybe_json(gotext.from_byte_view(view[nxt:]), escape)
    return (kind, *args), is_json


def _go_quote(text: str) -> str:
    """Go's %q for messages (close enough: JSON string escaping)."""
    import json

    return json.dumps(text, ensure_ascii=False)


LINE_PARSERS: dict[str, LineParser] = {
    "add": maybe_json_to_list,
    "arg": name_or_name_val,
    "cmd": maybe_json,
    "copy": maybe_json_to_list,
    "entrypoint": maybe_json,
    "env": env,
    "expose": whitespace_delimited,
    "from": whitespace_delimited,
    "healthcheck": health_config,
    "label": label,
    "maintainer": single_string,
    "run": maybe_json,
    "shell": maybe_json,
    "stopsignal": single_string,
    "user": single_string,
    "volume": maybe_json_to_list,
    "workdir": single_string,
}
