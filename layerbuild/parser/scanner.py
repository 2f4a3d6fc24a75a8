"""Physical lines to logical lines: BOM, line ends, parser directives, comments, continuations.

This is the pre-pass in front of the grammar. It follows BuildKit's scanner: a line that ends in
the escape character (plus blanks) continues on the next line; comment lines and empty lines
inside a continuation are dropped; parser directives are only recognised before anything else.
Heredoc bodies are taken from the same line stream by the parser, once it knows the instruction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from layerbuild.parser import gotext

BOM = "\ufeff"
VALID_DIRECTIVES = ("escape", "syntax")
# Go's regexp `\s` is [\t\n\f\r ]; Python's is Unicode-wide, so spell it out.
# BuildKit's directive regexp is `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`. Its lazy value
# followed by `\s*$` backtracks over every run of blanks inside the value (quadratic on a long
# first line), so only the part up to `=` is a regexp; `match_directive` takes the value apart.
_DIRECTIVE_KEY_RE = re.compile(r"#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=")
_GO_REGEXP_SPACE = "\t\n\f\r "
_DIRECTIVE_RE = re.compile(r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$")


def match_directive(line: str) -> tuple[str, str] | None:
    """(key, value) if `line` is a parser directive by BuildKit's regexp, else None; linear time."""
    match = _DIRECTIVE_KEY_RE.match(line)
    if match is None:
        return None
    rest = line[match.end() :]
    if "\n" in rest:  # never from the scanner, which splits at line ends; the regexp decides
        full = _DIRECTIVE_RE.match(line)
        return (full.group(1), full.group(2)) if full is not None else None
    if rest == "":
        return None
    value = rest.lstrip(_GO_REGEXP_SPACE).rstrip(_GO_REGEXP_SPACE)
    if value == "":
        # Only blanks after `=`: the lazy group must still take one character, the last blank.
        value = rest[-1]
    return match.group(1), value


class DirectiveError(Exception):
    """A bad or repeated parser directive; `line` is 1-based."""

    def __init__(self, message: str, line: int, hint: str) -> None:
        super().__init__(message)
        self.line = line
        self.hint = hint


def split_physical_lines(text: str) -> list[str]:
    """Lines with their ends kept, split at "\\n" only (a lone "\\r" does not end a line)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def trim_newline(line: str) -> str:
    return line.rstrip("\r\n")


def is_comment(line: str) -> bool:
    return gotext.trim_left_space(line).startswith("#")


@dataclass
class Directives:
    """The parser directives seen so far, and whether the directive block is over."""

    escape: str = "\\"
    values: dict[str, str] = field(default_factory=dict)
    done: bool = False
    _continuation: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self._set_escape(self.escape)

    def _set_escape(self, token: str) -> None:
        self.escape = token
        e = re.escape(token)
        # A trailing escape continues the line unless it is itself escaped; one on a line of its
        # own continues too.
        self._continuation = re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")

    def observe(self, line: str, number: int) -> bool:
        """Look at a line (already left-trimmed) for a directive; True if it was one."""
        if self.done:
            return False
        match = match_directive(line)
        if match is None:
            self.done = True
            return False
        key = match[0].lower()
        if key not in VALID_DIRECTIVES:
            # `# check=...` and other keys end the block, as in BuildKit v0.12.5; a `check`
            # seen there is still kept for later stages.
            if key == "check":
                self.values.setdefault(key, match[1])
            self.done = True
            return False
        if key in self.values:
            raise DirectiveError(
                f"only one {key} parser directive can be used",
                number,
                f"remove the second `# {key}=` line",
            )
        self.values[key] = match[1]
        if key == "escape":
            if match[1] not in ("\\", "`"):
                raise DirectiveError(
                    f"invalid escape token '{match[1]}' does not match ` or \\",
                    number,
                    "the escape character can only be a backslash or a backtick",
                )
            self._set_escape(match[1])
        return True

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        """Remove a trailing continuation; returns (line, is_end_of_logical_line)."""
        new, count = self._continuation.subn(r"\1", line, count=1)
        return (new, False) if count else (line, True)


@dataclass(frozen=True)
class LogicalLine:
    """One instruction's text with its continuations joined, and where it stands in the file."""

    text: str
    start_line: int
    end_line: int
    column: int
    empty_continuation: bool


class LineScanner:
    """Yields logical lines; the parser may take raw lines after one (heredoc bodies)."""

    def __init__(self, text: str) -> None:
        if text.startswith(BOM):
            text = text[1:]
        self.lines = split_physical_lines(text)
        self.pos = 0  # index of the next physical line; also the count of lines consumed
        self.directives = Directives()

    def next_raw(self) -> str | None:
        if self.pos >= len(self.lines):
            return None
        line = self.lines[self.pos]
        self.pos += 1
        return line

    def next_logical(self) -> LogicalLine | None:
        while True:
            raw = self.next_raw()
            if raw is None:
                return None
            number = self.pos
            body = trim_newline(raw)
            stripped = gotext.trim_left_space(body)
            column = len(body) - len(stripped) + 1
            self.directives.observe(stripped, number)
            if is_comment(stripped):
                stripped = ""
            text, end = self.directives.trim_continuation(stripped)
            if end and text == "":
                continue
            parts = [text]
            empty_continuation = False
            while not end:
                raw = self.next_raw()
                if raw is None:
                    break
                body = trim_newline(raw)
                self.directives.observe(body, self.pos)
                if is_comment(raw):
                    continue
                if gotext.trim_left_space(body) == "":
                    empty_continuation = True
                    continue
                body, end = self.directives.trim_continuation(body)
                parts.append(body)
            return LogicalLine("".join(parts), number, self.pos, column, empty_continuation)
