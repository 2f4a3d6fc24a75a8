"""Hypothesis strategies for Dockerfile-like text: the corners real files and naive grammars hit."""

from __future__ import annotations

from hypothesis import strategies as st

KEYWORDS = [
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
]
ODD_CHARS = ["é", "♥", "\u00a0", "\u2003", "\u0085", "ß", "İ", "日本", "\x0b", "\x0c", "\r"]

keyword = st.one_of(
    st.sampled_from(KEYWORDS),
    st.sampled_from(KEYWORDS).map(str.lower),
    st.sampled_from(KEYWORDS).map(str.title),
    st.sampled_from(["FOO", "frm", "COPPY", "from\u00a0x", "İNCLUDE"]),
)

plain_word = st.text(
    alphabet=st.sampled_from(list("abcxyz019._/-:@=$") + ODD_CHARS[:3]), min_size=1, max_size=8
)
word = st.one_of(
    plain_word,
    st.sampled_from([
        '"a b"', "'c d'", '"x\\"y"', "a\\ b", "$HOME", "${X:-def}", "${Y:+alt}", "\\$v", "a=b",
        'k="v w"', "k=", "=v", "--", "-", "<<EOF", "<<-EOF", "3<<IN", "<<'Q'", '<<"DQ"',
        "<<E\"O\"F", "<<$E", "<<", "'", '"', "\\", "`", "[", "]", "#", "é=ß", "\\\\",
    ]),
)

flag = st.one_of(
    st.sampled_from([
        "--from=build", "--chown=1:1", "--mount=type=cache,target=/x", "--link", "--network=none",
        '--x="a b"', "--y='c d'", "--", "--a\\ b", '--q="unterminated', "--é=ß", "--=", "---",
        "--platform=$BUILDPLATFORM",
    ]),
    plain_word.map(lambda w: "--" + w),
)

json_array = st.one_of(
    st.lists(st.sampled_from(["a", "echo hi", "", "\\n", "é", "$x", "\\u00e9", "\\ud800"]), max_size=4).map(
        lambda items: "[" + ", ".join('"' + i + '"' for i in items) + "]"
    ),
    st.sampled_from([
        '["a", 1]', '["a", ["b"]]', "[1e400]", "[NaN]", '["a" "b"]', "['a']", '["a",]', "[", "[]",
        '["a"] tail', ' [ "sp" ] ', '["a\tb"]', '["a", null]', '[{"k": "v"}]', '["\\x"]',
    ]),
)

blank = st.sampled_from([" ", "  ", "\t", " \t "])


@st.composite
def argument_text(draw: st.DrawFn) -> str:
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(json_array)
    parts = draw(st.lists(word, min_size=0, max_size=5))
    seps = [draw(blank) for _ in parts]
    return "".join(p + s for p, s in zip(parts, seps)).rstrip(" \t") if draw(st.booleans()) else \
        "".join(p + s for p, s in zip(parts, seps))


@st.composite
def instruction(draw: st.DrawFn) -> str:
    kw = draw(keyword)
    if kw.upper() == "ONBUILD" and draw(st.booleans()):
        kw = kw + " " + draw(st.sampled_from(KEYWORDS[:-2]))
    flags = draw(st.lists(flag, max_size=3))
    args = draw(argument_text())
    line = kw
    for f in flags:
        line += draw(blank) + f
    if args or draw(st.booleans()):
        line += draw(blank) + args
    # Continuations: split the line at some blanks and join with escape + newline.
    if draw(st.booleans()):
        cut = draw(st.integers(min_value=0, max_value=len(line)))
        between = draw(st.sampled_from(["", "# a comment\n", "\n", "   \n", "  # indented\n"]))
        tail = draw(st.sampled_from(["", " ", "  \t"]))
        line = line[:cut] + "\\" + tail + "\n" + between + draw(st.sampled_from(["", "  ", "\t"])) + line[cut:]
    if draw(st.booleans()):
        line += draw(st.sampled_from(["", " ", "\\", " \\ ", "\t"]))
    return line


heredoc_body = st.lists(
    st.sampled_from(["echo hi", "\tindented", "EOF ", "", "$X", "RUN inside", "IN", "Q", "DQ", "E"]),
    max_size=3,
)


@st.composite
def dockerfile_text(draw: st.DrawFn) -> str:
    lines: list[str] = []
    if draw(st.booleans()):
        lines += draw(st.lists(st.sampled_from([
            "# syntax=docker/dockerfile:1", "# escape=`", "# escape=\\", "#escape=`", "# check=skip=all",
            "# ESCAPE = `", "# escape=|", "# comment", "",
        ]), max_size=3))
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice == 0:
            lines.append(draw(st.sampled_from(["# comment", "", "   ", "\t# tabbed comment", "#"])))
        else:
            lines.append(draw(instruction()))
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            lines += draw(heredoc_body)
            lines.append(draw(st.sampled_from(["EOF", "\tEOF", "IN", "Q", "DQ", "EOF", "E"])))
    sep = "\r\n" if draw(st.integers(0, 5)) == 0 else "\n"
    text = sep.join(lines)
    if draw(st.booleans()):
        text += sep
    if draw(st.integers(0, 8)) == 0:
        text = "\ufeff" + text
    if draw(st.integers(0, 4)) == 0:
        text = text.replace("\\\n", "`\n")
    return text
