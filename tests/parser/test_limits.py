"""The parser's input limits (line, file, instruction count) and reading a Dockerfile from disk."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerbuild.errors import DockerfileSyntaxError, ExpansionError, UsageError
from layerbuild.parser import core, limits, parse
from layerbuild.parser.limits import MAX_FILE_BYTES, MAX_LINE_BYTES, read_dockerfile
from layerbuild.parser.scanner import match_directive
from layerbuild.parser.shell import ExpansionBudget, ShellLex, _Failure, _trim


def test_a_line_of_the_maximum_size_is_accepted() -> None:
    line = b"LABEL a=" + b"x" * (MAX_LINE_BYTES - 8)
    assert len(line) == MAX_LINE_BYTES
    df = parse(b"FROM scratch\n" + line + b"\n")
    assert df.instructions[1].value == ("a", "x" * (MAX_LINE_BYTES - 8))


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b""])
def test_a_longer_line_is_refused_where_it_is(end: bytes) -> None:
    line = b"LABEL a=" + b"x" * (MAX_LINE_BYTES - 7)
    with pytest.raises(DockerfileSyntaxError) as info:
        parse(b"FROM scratch\nRUN true\n" + line + end + b"RUN true\n" * bool(end))
    err = info.value
    assert (err.line, err.column) == (3, 1)
    assert err.message == "dockerfile line greater than max allowed size of 65535"
    assert err.hint and "\\" in err.hint
    assert err.source_line is not None and err.source_line.startswith("LABEL a=xxx") and len(err.source_line) < 200


def test_the_line_limit_counts_bytes_not_characters() -> None:
    value = "é" * (MAX_LINE_BYTES // 2)  # two bytes each: over the limit in bytes, not in characters
    with pytest.raises(DockerfileSyntaxError, match="max allowed size of 65535"):
        parse("FROM scratch\nLABEL a=" + value + "\n")


def test_continuation_lines_make_logical_lines_of_any_length() -> None:
    chunk = "y" * 1000
    text = "FROM scratch\nLABEL big=" + "\\\n".join([chunk] * 1024) + "\n"
    df = parse(text)
    assert df.instructions[1].value == ("big", chunk * 1024)
    assert df.instructions[1].end_line == 1025


def test_a_file_over_the_size_limit_is_refused_at_the_line_it_crosses() -> None:
    line = b"RUN " + b"z" * 1019 + b"\n"  # 1 KiB lines
    data = b"FROM scratch\n" + line * (MAX_FILE_BYTES // len(line) + 1)
    with pytest.raises(DockerfileSyntaxError) as info:
        parse(data)
    err = info.value
    assert err.message.startswith(f"dockerfile larger than max allowed size of {MAX_FILE_BYTES} bytes")
    assert err.line == MAX_FILE_BYTES // len(line) + 1 and err.column == 1 and err.hint
    with pytest.raises(DockerfileSyntaxError, match="larger than max allowed size"):
        parse(data.decode())


def test_too_many_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "MAX_INSTRUCTIONS", 5)
    assert len(parse("FROM scratch\n" + "RUN a\n" * 4).instructions) == 5
    with pytest.raises(DockerfileSyntaxError) as info:
        parse("FROM scratch\n# c\n" + "RUN a\n" * 5)
    assert (info.value.line, info.value.column) == (7, 1)
    assert "more than the max allowed 5 instructions" in info.value.message and info.value.hint


def test_the_default_limits_are_above_what_real_dockerfiles_use() -> None:
    assert limits.MAX_LINE_BYTES == 65535  # BuildKit's
    assert limits.MAX_FILE_BYTES >= 8 * 2**20
    assert limits.MAX_INSTRUCTIONS >= 100_000


def test_a_long_word_through_the_shell_lexer() -> None:
    word = "a" * 300_000 + "' q '" + "b" * 300_000 + " c"
    assert ShellLex().process_words(word, {}) == ["a" * 300_000 + " q " + "b" * 300_000, "c"]
    assert ShellLex().process_word("$X$X", {"X": "v" * 200_000}) == "v" * 400_000


# -- reading from disk --------------------------------------------------------------------------


def test_read_a_regular_file_and_a_link_to_one(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_bytes(b"FROM scratch\n")
    (tmp_path / "link").symlink_to("Dockerfile")
    assert read_dockerfile(tmp_path / "Dockerfile") == b"FROM scratch\n"
    assert read_dockerfile(tmp_path / "link") == b"FROM scratch\n"
    assert core.parse_file(str(tmp_path / "link")).instructions[0].cmd == "from"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("fifo")
    for name in ("fifo", "link"):
        with pytest.raises(UsageError, match=r"it is a FIFO \(named pipe\), not a regular file"):
            read_dockerfile(tmp_path / name)


def test_a_fifo_with_a_writer_is_refused_too(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    writer = os.open(tmp_path / "fifo", os.O_RDWR)  # holds the FIFO open as a writer would
    try:
        with pytest.raises(UsageError, match="FIFO"):
            read_dockerfile(tmp_path / "fifo")
    finally:
        os.close(writer)


def test_streams_read_a_pipe_once_to_its_end(tmp_path: Path) -> None:
    read, write_end = os.pipe()
    os.write(write_end, b"FROM scratch\n")
    os.close(write_end)
    try:
        with pytest.raises(UsageError, match="not a regular file"):
            read_dockerfile(f"/proc/self/fd/{read}")  # a build reads its Dockerfile more than once
        assert read_dockerfile(f"/proc/self/fd/{read}", streams=True) == b"FROM scratch\n"
    finally:
        os.close(read)


def _open_on(path: Path) -> int:
    """How many descriptors of this process are open on `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count


def test_streams_read_a_fifo_from_its_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="nothing was written to it"):
        read_dockerfile(fifo, streams=True)  # no writer: an answer at once, not a wait
    writer = os.open(fifo, os.O_RDWR)  # a writer that is there before the reader, as a pipeline's is
    os.write(writer, b"FROM scratch\n")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_dockerfile(fifo, streams=True)))
    reader.start()
    while _open_on(fifo) < 2 and reader.is_alive():  # until the reader has it open; closing then ends it
        time.sleep(0.01)
    os.close(writer)
    reader.join()
    assert got == [b"FROM scratch\n"]


def test_streams_from_an_endless_device_stop_at_the_size_limit() -> None:
    with pytest.raises(UsageError, match="it is a directory"):
        read_dockerfile("/", streams=True)
    data = read_dockerfile("/dev/zero", streams=True)
    assert len(data) == MAX_FILE_BYTES + 1


@pytest.mark.parametrize("kind", ["directory", "socket", "character device", "missing"])
def test_other_non_files(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "x"
    sock = None
    if kind == "directory":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    elif kind == "character device":
        path = Path("/dev/zero")
    try:
        with pytest.raises(UsageError) as info:
            read_dockerfile(path, "Dockerfile")
    finally:
        if sock is not None:
            sock.close()
    expected = "No such file or directory" if kind == "missing" else f"it is a {kind}, not a regular file"
    assert info.value.message.startswith("cannot read Dockerfile: ") and expected in info.value.message
    assert info.value.hint


def test_reading_stops_past_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES * 3)  # sparse: large on paper, no disk used
    data = read_dockerfile(path)
    assert len(data) == MAX_FILE_BYTES + 1
    with pytest.raises(DockerfileSyntaxError, match="larger than max allowed size"):
        core.parse_file(str(path))


# -- linear rewrites agree with the regular expression they replace ---------------------------------

_BUILDKIT_DIRECTIVE = re.compile(r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$")


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="#= \t\r\n\fab1`\\x\u00a0", max_size=14))
def test_directive_matching_agrees_with_buildkits_regexp(line: str) -> None:
    full = _BUILDKIT_DIRECTIVE.match(line)
    assert match_directive(line) == ((full.group(1), full.group(2)) if full else None)


def test_a_long_first_line_is_not_quadratic_to_read_as_a_directive() -> None:
    line = "# syntax=a" + " " * 60_000 + "b   "
    assert match_directive(line) == ("syntax", "a" + " " * 60_000 + "b")
    assert parse(line + "\nFROM scratch\n").directives == {"syntax": "a" + " " * 60_000 + "b"}


def _buildkit_trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str | None:
    """BuildKit's trimPrefix/trimSuffix (frontend/dockerfile/shell/lex.go), transliterated: the
    pattern becomes an anchored regular expression (`*` lazy for the shortest match, greedy for the
    longest; `?` any character but a newline; every regex character escaped, brackets too; a
    backslash keeps `*`, `?`, `\\`, is dropped before `}` and `/`, and is an error before anything
    else), a suffix is matched as the reversed pattern on the reversed value. None: an error."""
    def reverse_pattern(text: str) -> str:
        out = [""] * len(text)
        last, i = len(text) - 1, 0
        while i <= last:
            if text[i] == "\\" and i != last:
                out[last - i - 1], out[last - i] = "\\", text[i + 1]
                i += 2
            else:
                out[last - i] = text[i]
                i += 1
        return "".join(out)

    word = pattern if prefix else reverse_pattern(pattern)
    text = value if prefix else value[::-1]
    regex = ["^"]
    i = 0
    while i < len(word):
        ch = word[i]
        i += 1
        if ch == "*":
            regex.append(".*" if longest else ".*?")
        elif ch == "?":
            regex.append(".")
        elif ch == "\\":
            if i < len(word) and word[i] in "}/":
                continue
            if i >= len(word) or word[i] not in "*?\\":
                return None
            regex.append("\\" + word[i])
            i += 1
        else:
            regex.append(re.escape(ch))
    found = re.match("".join(regex), text)
    if found is not None:
        text = text[found.end():]
    return text if prefix else text[::-1]


def _trim_or_none(value: str, pattern: str, *, prefix: bool, longest: bool) -> str | None:
    try:
        return _trim(value, pattern, prefix=prefix, longest=longest)
    except _Failure:
        return None


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="ab\n.[]", max_size=10), st.text(alphabet="ab*?[]!^\\-.\n}/", max_size=8),
       st.booleans(), st.booleans())
def test_trimming_agrees_with_buildkits_regex_form(value: str, pattern: str, prefix: bool, longest: bool) -> None:
    assert _trim_or_none(value, pattern, prefix=prefix, longest=longest) == _buildkit_trim(
        value, pattern, prefix=prefix, longest=longest
    )


@pytest.mark.parametrize(("word", "value", "want"), [
    ("${A#[ab]}", "abc", "abc"),          # brackets are literal: no character classes
    ("${A#[ab]}", "[ab]c", "c"),
    ("${A#\\*}", "*x", "x"),              # an escaped star is a star
    ("${A#*}", "a\nb", "a\nb"),           # `*` stops at a newline, as Go's `.`
    ("${A%?}", "ab\n", "ab\n"),
    ("${A##*\\/}", "a/b/c", "c"),          # `\/` is a slash
    ("${A%%.*}", "x.y.z", "x"),
])
def test_trimming_follows_buildkit(word: str, value: str, want: str) -> None:
    assert ShellLex().process_word(word, {"A": value}) == want


def test_a_bad_escape_in_a_trim_pattern_is_an_error() -> None:
    with pytest.raises(ExpansionError, match=r"invalid pattern \(a\\b\) in substitution: invalid escape '\\b'"):
        ShellLex().process_word("${A#a\\b}", {"A": "ab"})
    with pytest.raises(ExpansionError, match=r"unsupported modifier \(:#\)"):
        ShellLex().process_word("${A:#a}", {"A": "ab"})


def test_trimming_a_long_value_is_linear() -> None:
    value = "a" * 200_000
    lex = ShellLex()
    assert lex.process_word("${A#*x}", {"A": value}) == value  # no match: every prefix was tried before
    assert lex.process_word("${A%%a*a*a*b}", {"A": value}) == value  # backtracked without bound before
    assert lex.process_word("${A##*a}", {"A": value + "b"}) == "b"
    assert lex.process_word("${A%a}", {"A": value}) == value[:-1]


def test_expansion_is_bounded_per_call_and_per_shared_budget() -> None:
    big = {"A": "x" * 1_000_000}
    assert len(ShellLex().process_word("$A" * 16, big)) == 16_000_000
    with pytest.raises(ExpansionError) as info:
        ShellLex().process_word("$A" * 17, big)
    assert "variable expansion larger than the max allowed 16777216 bytes" in info.value.message
    assert info.value.hint and len(info.value.message) < 400  # the word is cut in the message
    budget = ExpansionBudget(2_500_000)
    lex = ShellLex(budget=budget)
    lex.process_word("$A", big)
    lex.process_word("${A}", big)
    with pytest.raises(ExpansionError, match="max allowed 2500000 bytes"):
        ShellLex(budget=budget).process_words("$A", big)
    build = ExpansionBudget(13_000_000)
    one = ShellLex(budget=ExpansionBudget(3_000_000, parent=build))
    with pytest.raises(ExpansionError, match="max allowed 3000000 bytes"):
        one.process_word("$A" * 4, big)  # the instruction's own bound
    for _ in range(3):
        ShellLex(budget=ExpansionBudget(3_000_000, parent=build)).process_word("$A$A$A", big)
    with pytest.raises(ExpansionError, match="max allowed 13000000 bytes"):
        ShellLex(budget=ExpansionBudget(3_000_000, parent=build)).process_word("$A$A", big)  # the build's


def test_the_snippet_of_a_long_line_is_a_window_around_the_column() -> None:
    line = "a" * 500 + "^here" + "b" * 500
    err = DockerfileSyntaxError("boom", line=3, column=501, source_line=line, hint="h")
    snippet, caret = err.render().splitlines()[1:3]
    assert len(snippet) < 200 and snippet.startswith("    3 | …") and snippet.endswith("…")
    assert snippet[caret.index("^")] == "^" and snippet[caret.index("^") :].startswith("^here")
    short = DockerfileSyntaxError("boom", line=1, column=5, source_line="RUN \udcff x").render()
    assert short.splitlines()[1] == "    1 | RUN \\xff x" and short.splitlines()[2].index("^") == 12
