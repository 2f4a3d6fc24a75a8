""".dockerignore rules with Docker's semantics (moby/patternmatcher), and Go's filepath.Match for COPY globs.

A path is excluded when the last pattern that matches it (or one of its parent directories) is not an
exception (`!`). Patterns are cleaned like Go's `filepath.Clean`, a leading `/` is dropped, `*` and `?`
never cross a `/`, and `**` matches any number of directories (including none).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from layerbuild.errors import UsageError

_ESCAPED = frozenset(".+()|{}$")


class BadPatternError(UsageError):
    """A pattern that Go's filepath.Match would reject (`[` unclosed, `[]a]`, a trailing `\\`...)."""


def go_clean(path: str) -> str:
    """Go's `path.Clean`: drop `.` and empty components, fold `..`, keep a leading `/`; '' becomes '.'."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    joined = "/".join(parts)
    if rooted:
        return "/" + joined
    return joined or "."


def _class(pattern: str, i: int) -> tuple[str, int]:
    """Translate the character class starting at `pattern[i] == '['`; returns (regex, index after ']')."""
    n = len(pattern)
    i += 1
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    ranges: list[str] = []
    first = True
    while True:
        if i >= n:
            raise BadPatternError(f"syntax error in pattern {pattern!r}: unclosed '['")
        if pattern[i] == "]" and not first:
            i += 1
            break
        lo, i = _class_char(pattern, i)
        hi = lo
        if i < n and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        ranges.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
        first = False
    # A class never matches '/', like every other single-character pattern element.
    return ("[^/" if negate else "[") + "".join(ranges) + "]", i


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        raise BadPatternError(f"syntax error in pattern {pattern!r}: bad character class")
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPatternError(f"syntax error in pattern {pattern!r}: trailing '\\'")
    return pattern[i], i + 1


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's `filepath.Match` pattern as a compiled regex over a whole path (`*`, `?`, classes stop at '/')."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            cls, i = _class(pattern, i)
            out.append(cls)
            continue
        elif ch == "\\":
            i += 1
            if i >= n:
                raise BadPatternError(f"syntax error in pattern {pattern!r}: trailing '\\'")
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def has_wildcards(path: str) -> bool:
    """Whether `path` has an unescaped `*`, `?` or `[` (BuildKit's containsWildcards)."""
    i = 0
    while i < len(path):
        if path[i] in "*?[":
            return True
        if path[i] == "\\":
            i += 1
        i += 1
    return False


class Pattern:
    """One compiled pattern, matched against a cleaned, '/'-separated relative path."""

    __slots__ = ("depth", "exact", "exception", "prefix", "regex", "suffix", "text")

    def __init__(self, text: str, exception: bool) -> None:
        self.text = text
        self.exception = exception
        self.exact: str | None = None
        self.prefix: str | None = None
        self.suffix: str | None = None
        self.regex: re.Pattern[str] | None = None
        glob_regex(text)  # validation, as patternmatcher does with filepath.Match
        self._compile(text)
        # Without `**` a pattern only matches paths with as many components as it has.
        self.depth: int | None = None if "**" in text else text.count("/") + 1

    def _compile(self, pattern: str) -> None:
        # The same translation as patternmatcher's compile(), so the same paths match.
        out = ["^"]
        kind = "exact"
        i, n, token = 0, len(pattern), 0
        while i < n:
            ch = pattern[i]
            token += 1
            if ch == "*" and i + 1 < n and pattern[i + 1] == "*":
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        kind = "regexp"
                else:
                    out.append("(.*/)?")
                    kind = "regexp"
                if token == 1:
                    kind = "suffix"
                continue
            if ch == "*":
                out.append("[^/]*")
                kind = "regexp"
            elif ch == "?":
                out.append("[^/]")
                kind = "regexp"
            elif ch in _ESCAPED:
                out.append("\\" + ch)
            elif ch == "\\":
                if i + 1 < n:
                    out.append(re.escape(pattern[i + 1]))
                    kind = "regexp"
                    i += 1
                else:
                    out.append("\\\\")
            elif ch == "[":
                cls, i = _class(pattern, i)
                out.append(cls)
                kind = "regexp"
                continue
            else:
                out.append(re.escape(ch) if ch in "^]" else ch)
            i += 1
        if kind == "exact":
            self.exact = pattern
        elif kind == "prefix":
            self.prefix = pattern[:-2]
        elif kind == "suffix":
            self.suffix = pattern[2:]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.regex = re.compile("".join(out) + r"\Z", re.DOTALL)

    def match(self, path: str) -> bool:
        if self.exact is not None:
            return path == self.exact
        if self.prefix is not None:
            return path.startswith(self.prefix)
        if self.suffix is not None:
            suffix = self.suffix
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None

    def __repr__(self) -> str:
        return f"Pattern({'!' if self.exception else ''}{self.text!r})"


MatchInfo = tuple[bool, ...]  # per pattern: did it match the parent directory (or one of its parents)


class Matcher:
    """An ordered list of patterns; `matches` is patternmatcher's MatchesUsingParentResults."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exception = p.startswith("!")
            if exception:
                if len(p) == 1:
                    raise BadPatternError('illegal exclusion pattern: "!"')
                p = p[1:]
            self.patterns.append(Pattern(p, exception))
        self.has_exceptions = any(p.exception for p in self.patterns)
        self.empty = not self.patterns
        self._exceptions = [p for p in self.patterns if p.exception]

    def matches(self, path: str, parent: MatchInfo | None = None) -> tuple[bool, MatchInfo]:
        """Whether `path` is matched (excluded, for ignore rules), and the info its children need.

        `parent` is the MatchInfo returned for the parent directory; None means "not known", and the
        parents are then checked one by one (MatchesOrParentMatches)."""
        matched = False
        info: list[bool] = []
        depth = path.count("/") + 1
        for i, pat in enumerate(self.patterns):
            hit = parent[i] if parent else False
            if not hit and pat.exception == matched:
                hit = (pat.depth is None or pat.depth == depth) and pat.match(path)
                if not hit and parent is None and depth > 1:
                    hit = self._parent_matches(pat, path)
            info.append(hit)
            if hit:
                matched = not pat.exception
        return matched, tuple(info)

    @staticmethod
    def _parent_matches(pat: Pattern, path: str) -> bool:
        parts = path.split("/")[:-1]
        return any(pat.match("/".join(parts[: i + 1])) for i in range(len(parts)))

    def matches_path(self, path: str) -> bool:
        """Whether the cleaned relative `path` is excluded (parents checked too)."""
        path = go_clean(path)
        if path == ".":
            return False  # patternmatcher never excludes the root
        return self.matches(path)[0]

    def may_reinclude_below(self, directory: str) -> bool:
        """Whether an exception pattern could match something strictly inside `directory`.

        False lets a walker skip an excluded directory wholesale. Conservative: True when unsure."""
        if not self._exceptions:
            return False
        dparts = directory.split("/")
        for pat in self._exceptions:
            pparts = pat.text.split("/")
            if any("**" in p for p in pparts):
                return True
            if len(pparts) <= len(dparts):
                continue  # matches `directory` or above it at most: already part of its own result
            if all(glob_regex(pp).match(dp) for pp, dp in zip(pparts, dparts)):
                return True
        return False


def read_ignore_lines(text: str) -> list[str]:
    """The patterns of a .dockerignore file, as moby/patternmatcher/ignorefile.ReadAll reads them."""
    out: list[str] = []
    for n, line in enumerate(text.splitlines()):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def find_ignore_file(context: Path, dockerfile: Path | None) -> Path | None:
    """`<Dockerfile>.dockerignore` beside the Dockerfile wins over `.dockerignore` at the context root."""
    if dockerfile is not None:
        specific = dockerfile.with_name(dockerfile.name + ".dockerignore")
        if specific.is_file():
            return specific
    root_file = context / ".dockerignore"
    return root_file if root_file.is_file() else None


def load_matcher(context: Path, dockerfile: Path | None) -> tuple[Matcher, Path | None]:
    """The ignore rules that apply to a build of `dockerfile` with `context`, and the file they came from."""
    path = find_ignore_file(context, dockerfile)
    if path is None:
        return Matcher(()), None
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot read {path.name}: {exc}") from exc
    try:
        return Matcher(read_ignore_lines(text)), path
    except BadPatternError as exc:
        raise BadPatternError(f"{path.name}: {exc.message}") from None


def compile_patterns(patterns: Sequence[str]) -> Matcher:
    """A matcher for `COPY --exclude` / `--parents` patterns (the same syntax as .dockerignore)."""
    return Matcher(read_ignore_lines("\n".join(patterns)))
