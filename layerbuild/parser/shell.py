"""BuildKit's shell-word lexer (v0.12.5 semantics, plus the newer `${v-w}` `${v+w}` `${v#p}` `${v%p}` forms): quote removal, `$var`/`${var...}` expansion, word splitting."""

from __future__ import annotations

import json
from collections.abc import Mapping

from layerbuild.errors import ExpansionError

__all__ = ["MAX_EXPANSION_BYTES", "ExpansionBudget", "ShellLex"]

# What one word, or one build, may substitute in all: as much as a Dockerfile may hold, and 4×.
MAX_EXPANSION_BYTES = 16 * 1024 * 1024
MAX_BUILD_EXPANSION_BYTES = 4 * MAX_EXPANSION_BYTES

# Go's unicode.IsSpace: the Unicode White_Space property (Python's str.isspace also counts U+001C..U+001F).
_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
# POSIX special parameters: `$@`, `$*`, ... are names of one character.
_SPECIAL_PARAMS = frozenset("@*#?-$!0")
_EOF = ""  # what peek()/next() return at the end of the input


class _Failure(Exception):
    """An expansion failure inside the lexer; `ShellLex` turns it into an ExpansionError."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class _Words:
    """Accumulates the result of ProcessWords: splits on unquoted whitespace, keeps quoted text whole.

    The current word is a list of pieces joined once it ends: growing a string held in an
    attribute copies it on every character, which made long words quadratic.
    """

    def __init__(self) -> None:
        self.word: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in _SPACE:
            # An empty quoted string sets in_word without text; BuildKit then drops it, and so do we.
            if self.in_word and self.word:
                self._end_word()
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word.append(ch)
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        if text:
            self.word.append(text)
        self.in_word = True

    def _end_word(self) -> None:
        self.words.append("".join(self.word))
        self.word = []
        self.in_word = False

    def result(self) -> list[str]:
        if self.word:
            self._end_word()
        return self.words


class _NoWords(_Words):
    """For callers that want only the expanded string: the word splitting is skipped."""

    def add_char(self, ch: str) -> None:
        pass

    def add_raw_char(self, ch: str) -> None:
        pass

    def add_string(self, text: str) -> None:
        pass

    def add_raw_string(self, text: str) -> None:
        pass


class ExpansionBudget:
    """How many bytes of variable values substitution may still copy into words.

    Substitution can double a value with every instruction (`ENV B=$A$A`, `ENV C=$B$B`, ...), so
    without a bound a Dockerfile of a few lines exhausts memory. One budget can be shared by all
    the lexers of a build; a lexer without one gets `limit` for each call.
    """

    def __init__(self, limit: int, parent: ExpansionBudget | None = None) -> None:
        self.limit = limit
        self.left = limit
        self.parent = parent  # a wider budget that every spending is also charged to

    def spend(self, size: int) -> None:
        budget: ExpansionBudget | None = self
        while budget is not None:
            if size > budget.left:
                raise _Failure(
                    f"variable expansion larger than the max allowed {budget.limit} bytes",
                    hint="variables are copied into every word that names them; keep large data in files of the context",
                )
            budget = budget.parent
        budget = self
        while budget is not None:
            budget.left -= size
            budget = budget.parent


class _Run:
    """The state of one call: the input, a cursor, the environment and the names that matched."""

    def __init__(self, lex: ShellLex, text: str, env: Mapping[str, str], *, words: bool = True) -> None:
        # Go's text/scanner skips a byte-order mark at the very start of its input.
        self.text = text[1:] if text.startswith("\ufeff") else text
        self.pos = 0
        self.lex = lex
        self.env = env
        self.matches: set[str] = set()
        self.split = words
        # BuildKit's processStopOn sets this per word: kept for `#`/`%` patterns, dropped for `-`/`+`/`?`.
        self.raw_escapes = lex.raw_escapes
        self.budget = lex.budget if lex.budget is not None else ExpansionBudget(MAX_EXPANSION_BYTES)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    def get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matches.add(name)
            value = self.env[name]
            self.budget.spend(len(value))
            return value, True
        return "", False

    def stop_on(self, stop: str, raw: bool | None = None) -> tuple[str, list[str]]:
        """Process up to (and consuming) `stop`, or to the end of input when `stop` is _EOF; `raw`
        keeps (True) or drops (False) escape characters in this word, whatever the lexer's setting."""
        if raw is not None and raw != self.raw_escapes:
            self.raw_escapes = raw
            try:
                return self.stop_on(stop)
            finally:
                self.raw_escapes = not raw
        lex = self.lex
        result: list[str] = []
        words = _Words() if self.split else _NoWords()
        while (ch := self.peek()) != _EOF:
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "$":
                value = self.dollar()
                result.append(value)
                words.add_string(value)
            elif ch == "'" and not lex.skip_process_quotes:
                value = self.single_quote()
                result.append(value)
                words.add_raw_string(value)
            elif ch == '"' and not lex.skip_process_quotes:
                value = self.double_quote()
                result.append(value)
                words.add_raw_string(value)
            else:
                ch = self.next()
                if ch == lex.escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = self.next()
                    if ch == _EOF:
                        break  # an escape at the very end escapes nothing and vanishes
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _Failure(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def single_quote(self) -> str:
        # Everything up to the next single quote is literal; a single quote cannot be escaped inside.
        result: list[str] = []
        quote = self.next()
        if self.lex.raw_quotes:
            result.append(quote)
        while True:
            ch = self.next()
            if ch == _EOF:
                raise _Failure("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            result.append(ch)

    def double_quote(self) -> str:
        # Literal except `$`, and the escape character, which escapes only `"`, `$` and itself.
        lex = self.lex
        result: list[str] = []
        quote = self.next()
        if lex.raw_quotes:
            result.append(quote)
        while True:
            ch = self.peek()
            if ch == _EOF:
                raise _Failure("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                if lex.raw_quotes:
                    result.append(ch)
                return "".join(result)
            if ch == "$":
                result.append(self.dollar())
                continue
            ch = self.next()
            if ch == lex.escape:
                if self.raw_escapes:
                    result.append(ch)
                following = self.peek()
                if following == _EOF:
                    continue  # the missing closing quote is reported on the next turn
                if following in ('"', "$", lex.escape):
                    ch = self.next()
                # Otherwise the escape character stays (BuildKit writes it again even with raw_escapes).
            result.append(ch)

    def stop_on_brace(self, raw: bool | None = None) -> str:
        try:
            word, _ = self.stop_on("}", raw)
        except _Failure:
            if self.peek() == _EOF:
                raise _Failure("syntax error: missing '}'") from None
            raise
        return word

    def dollar(self) -> str:
        self.next()  # the `$`
        skip_unset = self.lex.skip_unset_env
        if self.peek() != "{":
            name = self.name()
            if not name:
                return "$"
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "$" + name
            return value

        self.next()  # the `{`
        first = self.peek()
        if first == _EOF:
            raise _Failure("syntax error: missing '}'")
        if first in "{}:":
            raise _Failure("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "${" + name + "}"
            return value
        if ch == "?":
            word = self.stop_on_brace(raw=False)
            value, found = self.get_env(name)
            if not found:
                if skip_unset:
                    return "${" + name + "?" + word + "}"
                raise _Failure(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch == ":":
            modifier = self.next()
            if modifier in ("#", "%"):
                raise _Failure(f"unsupported modifier (:{modifier}) in substitution")
            word = self.stop_on_brace(raw=False)
            value, found = self.get_env(name)
            if not found and skip_unset and modifier in "+-?":
                return "${" + name + ":" + modifier + word + "}"
            if modifier == "+":
                return word if value else value
            if modifier == "-":
                return value or word
            if modifier == "?":
                if not found:
                    raise _Failure(f"{name}: {word or 'is not allowed to be unset'}")
                if not value:
                    raise _Failure(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            raise _Failure(f"unsupported modifier (:{modifier}) in substitution")
        # The forms below are in the current Dockerfile reference (BuildKit v0.13 and later);
        # v0.12.5 rejected them, but users of today's Docker expect them.
        if ch in ("-", "+"):
            word = self.stop_on_brace(raw=False)
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "${" + name + ch + word + "}"
            if ch == "-":
                return value if found else word
            return word if found else ""
        if ch in ("#", "%"):
            longest = self.peek() == ch
            if longest:
                self.next()
            pattern = self.stop_on_brace(raw=True)
            value, found = self.get_env(name)
            if not found and skip_unset:
                return "${" + name + ch * (2 if longest else 1) + pattern + "}"
            return _trim(value, pattern, prefix=ch == "#", longest=longest)
        raise _Failure("missing ':' in substitution")

    def name(self) -> str:
        """A variable name: letters, digits and `_`; or all leading digits; or one special parameter."""
        start = self.pos
        text = self.text
        end = len(text)
        if start < end:
            first = text[start]
            if first.isdecimal():
                pos = start
                while pos < end and text[pos].isdecimal():
                    pos += 1
                self.pos = pos
                return text[start:pos]
            if first in _SPECIAL_PARAMS:
                self.pos += 1
                return first
        pos = start
        while pos < end and (text[pos].isalpha() or text[pos].isdecimal() or text[pos] == "_"):
            pos += 1
        self.pos = pos
        return text[start:pos]


class ShellLex:
    """Expands and unquotes Dockerfile words the way BuildKit's `shell.Lex` does.

    `escape` is the Dockerfile's escape character (`\\` or a backtick). `raw_quotes` keeps the
    quote characters in the result, `raw_escapes` keeps the escape characters, `skip_unset_env`
    leaves references to unset variables as written, and `skip_process_quotes` treats quotes as
    ordinary characters (BuildKit uses it to expand heredoc bodies).
    """

    def __init__(
        self,
        escape: str = "\\",
        *,
        raw_quotes: bool = False,
        raw_escapes: bool = False,
        skip_unset_env: bool = False,
        skip_process_quotes: bool = False,
        budget: ExpansionBudget | None = None,
    ) -> None:
        if len(escape) != 1:
            raise ValueError(f"the escape token must be one character, not {escape!r}")
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset_env = skip_unset_env
        self.skip_process_quotes = skip_process_quotes
        self.budget = budget

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """`word` expanded and unquoted, as one string (inner whitespace kept)."""
        return self._process(word, env, split=False)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """`word` expanded, then split into words on whitespace that was neither quoted nor escaped."""
        return self._process(word, env)[1]

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str]]:
        """Like `process_word`, plus the names of the variables it referenced that `env` defines."""
        result, _, matches = self._process(word, env, split=False)
        return result, matches

    def _process(self, word: str, env: Mapping[str, str], *, split: bool = True) -> tuple[str, list[str], set[str]]:
        run = _Run(self, word, env, words=split)
        try:
            result, words = run.stop_on(_EOF)
        except _Failure as exc:
            raise ExpansionError(f"failed to process {_quote(_short(word))}: {exc}", hint=exc.hint) from None
        except RecursionError:
            raise ExpansionError(
                f"failed to process {_quote(_short(word))}: substitutions nested too deeply"
            ) from None
        return result, words, run.matches


_STAR, _ANY, _CHAR = range(3)
_Token = tuple[int, "str | None"]


def _glob_tokens(pattern: str) -> list[_Token]:
    """A `${v#pattern}` pattern as BuildKit's convertShellPatternToRegex reads it: `*` any run and `?`
    any one character (neither matches a newline, as in Go's regexp), every other character itself
    (brackets included: BuildKit escapes them, so there are no character classes). A backslash
    before `}` or `/` is dropped; before `*`, `?` or `\\` it makes that character literal; before
    anything else it is an error."""
    out: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append((_STAR, None))
        elif ch == "?":
            out.append((_ANY, None))
        elif ch == "\\":
            if i < n and pattern[i] in "}/":
                continue
            escaped = pattern[i] if i < n else ""
            if escaped not in ("*", "?", "\\") or not escaped:
                raise _Failure(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{escaped}'")
            out.append((_CHAR, escaped))
            i += 1
        else:
            out.append((_CHAR, ch))
    return out


def _reverse_pattern(pattern: str) -> str:
    """The pattern reversed with each escape kept before the character it escapes (BuildKit's
    reversePattern: `a\\*c` → `c\\*a`), for matching a suffix as a prefix of the reversed value."""
    out = [""] * len(pattern)
    last, i = len(pattern) - 1, 0
    while i <= last:
        at = last - i
        if pattern[i] == "\\" and i != last:
            out[at - 1], out[at] = "\\", pattern[i + 1]
            i += 2
        else:
            out[at] = pattern[i]
            i += 1
    return "".join(out)


class _Glob:
    """A shell pattern run as a set of positions in it, one character at a time: whether a
    prefix of the text matches is known after each character, so finding the shortest or the
    longest matching prefix takes one pass (testing each prefix anew was quadratic, and the
    regular expressions behind it backtracked without bound on patterns with many `*`)."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.end = len(tokens)
        self.start = self._closure({0})
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def _closure(self, states: set[int]) -> frozenset[int]:
        """`states` plus every position reached by letting a `*` match nothing."""
        out: set[int] = set()
        pending = list(states)
        while pending:
            pos = pending.pop()
            if pos in out:
                continue
            out.add(pos)
            if pos < self.end and self.tokens[pos][0] == _STAR:
                pending.append(pos + 1)
        return frozenset(out)

    def step(self, states: frozenset[int], ch: str) -> frozenset[int]:
        key = (states, ch)
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        following: set[int] = set()
        for pos in states:
            if pos == self.end:
                continue
            kind, arg = self.tokens[pos]
            if kind == _STAR:
                if ch != "\n":
                    following.add(pos)
            elif (kind == _ANY and ch != "\n") or (kind == _CHAR and arg == ch):
                following.add(pos + 1)
        result = self._closure(following)
        if len(self._steps) > 4096:  # a memo of the transitions seen, kept small
            self._steps.clear()
        self._steps[key] = result
        return result


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    """`${v#p}` / `${v##p}` / `${v%p}` / `${v%%p}`: drop the shortest or longest matching end.

    A suffix is matched as the reversed pattern against the reversed value, as BuildKit does.
    """
    glob = _Glob(_glob_tokens(pattern if prefix else _reverse_pattern(pattern)))
    states = glob.start
    best = 0 if glob.end in states else -1
    if best < 0 or longest:
        for count, ch in enumerate(value if prefix else reversed(value), 1):
            states = glob.step(states, ch)
            if not states:
                break
            if glob.end in states:
                best = count
                if not longest:
                    break
    if best < 0:
        return value
    return value[best:] if prefix else value[: len(value) - best]


def _short(text: str) -> str:
    """`text` for a message: long words are cut."""
    return text if len(text) <= 200 else text[:200] + "…"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
