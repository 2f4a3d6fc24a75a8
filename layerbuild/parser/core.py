"""Dockerfile text to the typed AST: the scanner's logical lines, split by the Lark grammar.

`parse()` is the entry point. Its result agrees with BuildKit v0.12.5's parser (the reference the
conformance suite was made with); every failure is a DockerfileSyntaxError with a location.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING

from layerbuild.errors import DockerfileSyntaxError, ExpansionError
from layerbuild.parser import args as line_parsers
from layerbuild.parser import gotext
from layerbuild.parser.ast import Dockerfile, Heredoc, Instruction
from layerbuild.parser.limits import MAX_INSTRUCTIONS, check_size, read_dockerfile, too_many_instructions
from layerbuild.parser.scanner import DirectiveError, LineScanner, LogicalLine, split_physical_lines

HEREDOC_INSTRUCTIONS = frozenset({"run", "copy", "add"})
_HEREDOC_WORD_RE = re.compile(r"^(\d*)<<(-?)([^<]*)$")

if TYPE_CHECKING:
    from lark import Lark

Split = tuple[str, tuple[str, ...], str]  # split_command's answer: keyword as written, flags, rest


def _user_cache_dir() -> str | None:
    """The user's own cache directory for the parser's files, None if there is no safe place."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "layerbuild")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if os.stat(folder).st_uid != os.getuid():
            return None
    except OSError:
        return None
    return folder


def _grammar_cache_file(text: str) -> str | bool:
    """A per-user file for Lark's compiled grammar; False (no disk cache) if there is no safe place.

    Lark's default cache lives in the shared temp directory and is unpickled on load, so it is
    kept in the user's own cache directory instead.
    """
    import hashlib

    import lark

    folder = _user_cache_dir()
    if folder is None:
        return False
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return os.path.join(folder, f"grammar-{digest}-lark{lark.__version__}.cache")


def _grammar_path() -> str:
    """The grammar file: in the installed package (`layerbuild/grammar/`, package data of
    `layerbuild.grammar`), else the source tree's top-level `grammar/` (a checkout on sys.path)."""
    here = os.path.dirname(os.path.abspath(__file__))
    installed = os.path.join(os.path.dirname(here), "grammar", "dockerfile.lark")
    if os.path.isfile(installed):
        return installed
    return os.path.join(os.path.dirname(os.path.dirname(here)), "grammar", "dockerfile.lark")


def grammar_text() -> str:
    """The Lark grammar of one logical line (see `_grammar_path`)."""
    with open(_grammar_path(), encoding="utf-8") as f:
        return f.read()


@lru_cache(maxsize=1)
def line_grammar() -> Lark:
    """The LALR parser for one logical line, built once per process (compiled form cached on disk)."""
    from lark import Lark

    text = grammar_text()
    return Lark(text, parser="lalr", lexer="contextual", cache=_grammar_cache_file(text),
                maybe_placeholders=False)


class _SplitMemo:
    """`split_command`'s answers by trimmed line, kept per user beside Lark's compiled grammar, for
    the builds (`parse(remember=True)`): a build whose Dockerfile lines were all split before loads
    no Lark. The file is named by a digest of everything an answer depends on (the grammar, this
    module and gotext, Lark's installed version), so it never answers for another grammar or
    splitter; a damaged or foreign file is ignored and rewritten. It keeps the latest lines only."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: str | None = None
        self._known: dict[str, Split] | None = None
        self._learned = False

    def _file(self) -> str | None:
        import hashlib
        from importlib.util import find_spec

        folder = _user_cache_dir()
        spec = find_spec("lark")
        if folder is None or spec is None or spec.origin is None:
            return None
        h = hashlib.sha256()
        for name in (_grammar_path(), __file__, gotext.__file__):
            with open(name, "rb") as f:
                h.update(f.read())
            h.update(b"\0")
        st = os.stat(spec.origin)
        h.update(f"{spec.origin}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        return os.path.join(folder, f"split-{h.hexdigest()[:24]}.json")

    def _load(self) -> dict[str, Split]:
        if self._known is None:
            import json

            self._known = {}
            self._path = self._file()
            rows = None
            if self._path is not None:
                try:
                    with open(self._path, encoding="utf-8") as f:
                        rows = json.load(f)
                except (OSError, ValueError):
                    pass  # none yet, or damaged: rewritten by the next save
            if isinstance(rows, dict):
                for line, got in rows.items():
                    if (isinstance(got, list) and len(got) == 3 and isinstance(got[0], str)
                            and isinstance(got[2], str) and isinstance(got[1], list)
                            and all(isinstance(flag, str) for flag in got[1])):
                        self._known[line] = (got[0], tuple(got[1]), got[2])
        return self._known

    def get(self, line: str) -> Split | None:
        with self._lock:
            return self._load().get(line)

    def learn(self, line: str, answer: Split) -> None:
        with self._lock:
            self._load()[line] = answer
            self._learned = True

    def save(self) -> None:
        """Write what was learned (atomically; a failure only means the next build splits again)."""
        with self._lock:
            if not self._learned or self._path is None or self._known is None:
                return
            import json

            rows = list(self._known.items())[-self.LIMIT:]
            tmp = f"{self._path}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump({line: [a[0], list(a[1]), a[2]] for line, a in rows}, f)
                os.replace(tmp, self._path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            self._learned = False


_MEMO = _SplitMemo()


class _LineError(Exception):
    def __init__(self, message: str, hint: str | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.column = column


def _unquote_flag(token: str) -> str:
    """A flag word with its quotes and backslash escapes resolved (BuildKit's rules)."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(token)
    while i < n:
        ch = token[i]
        if not quote and ch in "'\"":
            quote = ch
            i += 1
            continue
        if quote and ch == quote:
            quote = ""
            i += 1
            continue
        if ch == "\\":
            if i + 1 == n:
                break
            i += 1
            ch = token[i]
        out.append(ch)
        i += 1
    return "".join(out)


def split_command(line: str, *, remember: bool = False) -> Split:
    """A logical line → (keyword as written, flags, rest of the line); with `remember`, through the
    per-user memo of earlier answers (`_SplitMemo`)."""
    trimmed = gotext.trim_space(line)
    if trimmed == "":
        return "", (), ""
    if not remember:
        return _split(trimmed)
    known = _MEMO.get(trimmed)
    if known is None:
        known = _split(trimmed)
        _MEMO.learn(trimmed, known)
    return known


def _split(trimmed: str) -> Split:
    """`split_command` of a trimmed, non-empty line, by the grammar."""
    from lark import Token, Tree
    from lark.exceptions import LarkError

    view = gotext.byte_view(trimmed)
    try:
        tree = line_grammar().parse(view)
    except LarkError as exc:  # the grammar accepts every trimmed line; this guards regressions
        raise _LineError(f"cannot split instruction line: {exc}") from None
    keyword_tok = tree.children[0]
    assert isinstance(keyword_tok, Token)
    keyword = gotext.from_byte_view(str(keyword_tok))
    flags: list[str] = []
    rest = ""
    if len(tree.children) > 1:
        arguments = tree.children[1]
        assert isinstance(arguments, Tree)
        for child in arguments.children:
            if isinstance(child, Tree):  # a flag
                tok = child.children[0]
                assert isinstance(tok, Token)
                word = _unquote_flag(str(tok))
                if word == "--":
                    # A bare `--` ends the flags; everything after it is argument text.
                    assert tok.end_pos is not None
                    rest = gotext.from_byte_view(view[tok.end_pos :])
                    break
                # BuildKit builds flags byte by byte as runes, so non-ASCII bytes come out as
                # Latin-1 characters; the byte view reproduces exactly that.
                flags.append(word)
            else:
                rest = gotext.from_byte_view(str(child))
    return keyword, tuple(flags), gotext.trim_space(rest)


def _node_from_line(line: str, escape: str, remember: bool = False) -> Instruction:
    """One logical line to an Instruction (without positions or heredocs)."""
    keyword, flags, rest = split_command(line, remember=remember)
    cmd = gotext.lower(keyword)
    if cmd == "onbuild":
        inner = _node_from_line(rest, escape, remember) if rest != "" else None
        return Instruction(cmd=cmd, original=line, start_line=0, end_line=0, flags=flags,
                           inner=inner, keyword=keyword)
    fn = line_parsers.LINE_PARSERS.get(cmd, line_parsers.ignore)
    try:
        value, is_json = fn(rest, escape)
    except line_parsers.ArgumentError as exc:
        raise _LineError(str(exc), exc.hint, _column_of(line, rest)) from None
    return Instruction(cmd=cmd, original=line, start_line=0, end_line=0, flags=flags, value=value,
                       json=is_json, keyword=keyword)


def _column_of(line: str, rest: str) -> int | None:
    if rest:
        idx = line.find(rest[:20])
        if idx >= 0:
            return idx + 1
    return None


def _heredoc_from_word(word: str, escape: str) -> Heredoc | None:
    from layerbuild.parser.shell import ShellLex

    match = _HEREDOC_WORD_RE.match(word)
    if match is None or match.group(3) == "":
        return None
    fd = int(match.group(1)) if match.group(1) else 0
    chomp = match.group(2) == "-"
    rest = match.group(3)
    words = ShellLex("\\", skip_unset_env=True).process_words(rest, {})
    if len(words) != 1:
        return None
    raw = ShellLex("\\", skip_unset_env=True, raw_quotes=True).process_words(rest, {})
    if len(raw) != 1:
        raise _LineError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(name=words[0], file_descriptor=fd, content="", expand=quotes == raw_quotes,
                   chomp=chomp)


def _heredocs_in_line(line: str, escape: str) -> list[Heredoc]:
    from layerbuild.parser.shell import ShellLex

    lex = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    try:
        words = lex.process_words(line, {})
    except ExpansionError:
        # The official parser ignores lexing errors here: the line simply has no heredocs.
        return []
    docs = []
    for word in words:
        try:
            doc = _heredoc_from_word(word, escape)
        except ExpansionError as exc:
            raise _LineError(exc.message) from None
        if doc is not None:
            docs.append(doc)
    return docs


def _read_heredoc_bodies(scanner: LineScanner, docs: list[Heredoc], start_line: int) -> list[Heredoc]:
    out = []
    for doc in docs:
        content: list[str] = []
        while True:
            raw = scanner.next_raw()
            if raw is None:
                raise _HeredocError(doc.name, start_line)
            candidate = raw.rstrip("\r\n")
            if doc.chomp:
                candidate = candidate.lstrip("\t")
            if candidate == doc.name:
                break
            content.append(raw)
        out.append(Heredoc(doc.name, doc.file_descriptor, "".join(content), doc.expand, doc.chomp))
    return out


class _HeredocError(Exception):
    def __init__(self, name: str, line: int) -> None:
        super().__init__("unterminated heredoc")
        self.name = name
        self.line = line


def _can_contain_heredoc(node: Instruction) -> bool:
    # ONBUILD RUN <<EOF takes its body too: the trigger is what is looked at.
    target = node.inner if node.inner is not None else node
    return target.cmd in HEREDOC_INSTRUCTIONS and not target.json


def parse(text: str | bytes, filename: str = "Dockerfile", *, remember: bool = False) -> Dockerfile:
    """Parse Dockerfile text (str, or bytes read as UTF-8) into the typed AST.

    Raises DockerfileSyntaxError, and nothing else, for any input. With `remember` (a build's
    Dockerfile), lines are split through the per-user memo of earlier splits (`_SplitMemo`), and
    what was new is added to it: the same AST, without loading Lark for lines seen before.
    """
    if isinstance(text, bytes):
        check_size(text, filename)
        text = text.decode("utf-8", "surrogateescape")
    else:
        check_size(_utf8(text), filename)
    scanner = LineScanner(text)
    physical = tuple(line.rstrip("\r\n") for line in split_physical_lines(text.removeprefix("\ufeff")))

    def fail(message: str, line: int, column: int | None = None, hint: str | None = None) -> DockerfileSyntaxError:
        source = physical[line - 1] if 1 <= line <= len(physical) else None
        if source is None and not physical:
            source = ""  # an empty file: its one empty line
        return DockerfileSyntaxError(message, filename=filename, line=line, column=column or 1,
                                     source_line=source, hint=hint)

    instructions: list[Instruction] = []
    warnings: list[str] = []
    while True:
        try:
            logical: LogicalLine | None = scanner.next_logical()
        except DirectiveError as exc:
            raise fail(str(exc), exc.line, 1, exc.hint) from None
        if logical is None:
            break
        try:
            node = _node_from_line(logical.text, scanner.directives.escape, remember)
            heredocs: list[Heredoc] = []
            if _can_contain_heredoc(node) and "<<" in logical.text:
                heredocs = _read_heredoc_bodies(
                    scanner, _heredocs_in_line(logical.text, scanner.directives.escape), logical.start_line
                )
        except _LineError as exc:
            column = logical.column + (exc.column - 1 if exc.column else 0)
            raise fail(str(exc), logical.start_line, column, exc.hint) from None
        except _HeredocError as exc:
            raise fail(
                "unterminated heredoc", exc.line, logical.column,
                f"end the heredoc with a line holding only {exc.name!r}",
            ) from None
        if logical.empty_continuation:
            warnings.append(
                f"{filename}:{logical.start_line}: empty continuation line found in: {logical.text}"
            )
        if len(instructions) >= MAX_INSTRUCTIONS:
            raise too_many_instructions(filename, logical.start_line, physical[logical.start_line - 1],
                                        MAX_INSTRUCTIONS)
        inner = node.inner
        if inner is not None and heredocs:
            # The bodies belong to the trigger; the ONBUILD node itself reports none, as the
            # official parser's package does.
            inner = replace(inner, heredocs=tuple(heredocs))
            heredocs = []
        instructions.append(
            Instruction(
                cmd=node.cmd, original=node.original, start_line=logical.start_line,
                end_line=scanner.pos, flags=node.flags, value=node.value, json=node.json,
                heredocs=tuple(heredocs), inner=inner, column=logical.column,
                keyword=node.keyword,
            )
        )
    if not instructions:
        raise fail("file with no instructions", max(len(physical), 1), 1,
                   "a Dockerfile needs at least a FROM instruction")
    if remember:
        _MEMO.save()
    return Dockerfile(
        instructions=tuple(instructions),
        escape=scanner.directives.escape,
        directives=dict(scanner.directives.values),
        warnings=tuple(warnings),
        filename=filename,
        lines=physical,
    )


def _utf8(text: str) -> bytes:
    """`text` as the bytes it was read from (undecodable bytes are kept as surrogate escapes)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "surrogatepass")


def parse_file(path: str) -> Dockerfile:
    """Parse the Dockerfile at `path` (a regular file, or a pipe such as /dev/stdin, within the size
    limits); errors name the file as given."""
    return parse(read_dockerfile(path, streams=True), filename=path)
