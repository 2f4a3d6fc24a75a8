"""BuildKit's shell lexer semantics: its envVarTest/wordsTest tables, the options, and fuzzing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerbuild.errors import ExpansionError
from layerbuild.parser.shell import ShellLex

# Test vectors from BuildKit's frontend/dockerfile/shell/envVarTest (platform U/A rows; W rows are Windows).
# Format: platform | input | expected ("error" = the lexer must fail).
ENV_VAR_TABLE = """\
A|hello                    |     hello
A|he'll'o                  |     hello
A|he'llo                   |     error
A|he\\'llo                  |     he'llo
A|he\\\\'llo                 |     error
A|abc\\tdef                 |     abctdef
A|"abc\\tdef"               |     abc\\tdef
A|"abc\\\\tdef"              |     abc\\tdef
A|'abc\\tdef'               |     abc\\tdef
A|hello\\                   |     hello
A|hello\\\\                  |     hello\\
A|"hello                   |     error
A|"hello\\"                 |     error
A|"hel'lo"                 |     hel'lo
A|'hello                   |     error
A|'hello\\'                 |     hello\\
A|'hello\\there'            |     hello\\there
A|'hello\\\\there'           |     hello\\\\there
A|"''"                     |     ''
A|$.                       |     $.
A|he$1x                    |     hex
A|he$.x                    |     he$.x
U|he$pwd.                  |     he.
A|he$PWD                   |     he/home
A|he\\$PWD                  |     he$PWD
A|he\\\\$PWD                 |     he\\/home
A|"he\\$PWD"                |     he$PWD
A|"he\\\\$PWD"               |     he\\/home
A|\\${}                     |     ${}
A|\\${}aaa                  |     ${}aaa
A|he\\${}                   |     he${}
A|he\\${}xx                 |     he${}xx
A|${}                      |     error
A|${}aaa                   |     error
A|he${}                    |     error
A|he${}xx                  |     error
A|he${hi}                  |     he
A|he${hi}xx                |     hexx
A|he${PWD}                 |     he/home
A|he${.}                   |     error
A|he${XXX:-000}xx          |     he000xx
A|he${PWD:-000}xx          |     he/homexx
A|he${XXX:-$PWD}xx         |     he/homexx
A|he${XXX:-${PWD:-yyy}}xx  |     he/homexx
A|he${XXX:-${YYY:-yyy}}xx  |     heyyyxx
A|he${XXX:YYY}             |     error
A|he${XXX:+${PWD}}xx       |     hexx
A|he${PWD:+${XXX}}xx       |     hexx
A|he${PWD:+${SHELL}}xx     |     hebashxx
A|he${XXX:+000}xx          |     hexx
A|he${PWD:+000}xx          |     he000xx
A|'he${XX}'                |     he${XX}
A|"he${PWD}"               |     he/home
A|"he'$PWD'"               |     he'/home'
A|"$PWD"                   |     /home
A|'$PWD'                   |     $PWD
A|'\\$PWD'                  |     \\$PWD
A|'"hello"'                |     "hello"
A|he\\$PWD                  |     he$PWD
A|"he\\$PWD"                |     he$PWD
A|'he\\$PWD'                |     he\\$PWD
A|he${PWD                  |     error
A|he${PWD:=000}xx          |     error
A|he${PWD:+${PWD}:}xx      |     he/home:xx
A|he${XXX:-\\$PWD:}xx       |     he$PWD:xx
A|he${XXX:-\\${PWD}z}xx     |     he${PWDz}xx
A|안녕하세요                 |     안녕하세요
A|안'녕'하세요               |     안녕하세요
A|안'녕하세요                |     error
A|안녕\\'하세요               |     안녕'하세요
A|안\\\\'녕하세요              |     error
A|안녕\\t하세요               |     안녕t하세요
A|"안녕\\t하세요"             |     안녕\\t하세요
A|'안녕\\t하세요              |     error
A|안녕하세요\\                |     안녕하세요
A|안녕하세요\\\\               |     안녕하세요\\
A|"안녕하세요                |     error
A|"안녕하세요\\"              |     error
A|"안녕'하세요"              |     안녕'하세요
A|'안녕하세요                |     error
A|'안녕하세요\\'              |     안녕하세요\\
A|안녕$1x                    |     안녕x
A|안녕$.x                    |     안녕$.x
U|안녕$pwd.                  |     안녕.
A|안녕$PWD                   |     안녕/home
A|안녕\\$PWD                  |     안녕$PWD
A|안녕\\\\$PWD                 |     안녕\\/home
A|안녕\\${}                   |     안녕${}
A|안녕\\${}xx                 |     안녕${}xx
A|안녕${}                    |     error
A|안녕${}xx                  |     error
A|안녕${hi}                  |     안녕
A|안녕${hi}xx                |     안녕xx
A|안녕${PWD}                 |     안녕/home
A|안녕${.}                   |     error
A|안녕${XXX:-000}xx          |     안녕000xx
A|안녕${PWD:-000}xx          |     안녕/homexx
A|안녕${XXX:-$PWD}xx         |     안녕/homexx
A|안녕${XXX:-${PWD:-yyy}}xx  |     안녕/homexx
A|안녕${XXX:-${YYY:-yyy}}xx  |     안녕yyyxx
A|안녕${XXX:YYY}             |     error
A|안녕${XXX:+${PWD}}xx       |     안녕xx
A|안녕${PWD:+${XXX}}xx       |     안녕xx
A|안녕${PWD:+${SHELL}}xx     |     안녕bashxx
A|안녕${XXX:+000}xx          |     안녕xx
A|안녕${PWD:+000}xx          |     안녕000xx
A|'안녕${XX}'                |     안녕${XX}
A|"안녕${PWD}"               |     안녕/home
A|"안녕'$PWD'"               |     안녕'/home'
A|'"안녕"'                   |     "안녕"
A|안녕\\$PWD                  |     안녕$PWD
A|"안녕\\$PWD"                |     안녕$PWD
A|'안녕\\$PWD'                |     안녕\\$PWD
A|안녕${PWD                  |     error
A|안녕${PWD:=000}xx          |     error
A|안녕${PWD:+${PWD}:}xx      |     안녕/home:xx
A|안녕${XXX:-\\$PWD:}xx       |     안녕$PWD:xx
A|안녕${XXX:-\\${PWD}z}xx     |     안녕${PWDz}xx
A|$KOREAN                    |     한국어
A|안녕$KOREAN                |     안녕한국어
A|${{aaa}                   |     error
A|${aaa}}                   |     }
A|${aaa                     |     error
A|${{aaa:-bbb}              |     error
A|${aaa:-bbb}}              |     bbb}
A|${aaa:-bbb                |     error
A|${aaa:-bbb}               |     bbb
A|${aaa:-${bbb:-ccc}}       |     ccc
A|${aaa:-bbb ${foo}         |     error
A|${aaa:-bbb {foo}          |     bbb {foo
A|${:}                      |     error
A|${:-bbb}                  |     error
A|${:+bbb}                  |     error
"""

WORDS_TABLE = """\
hello | hello
hello${hi}bye | hellobye
ENV hi=hi
hello${hi}bye | hellohibye
ENV space=abc  def
hello${space}bye | helloabc,defbye
hello"${space}"bye | helloabc  defbye
hello "${space}"bye | hello,abc  defbye
ENV leading=  ab c
hello${leading}def | hello,ab,cdef
hello"${leading}" def | hello  ab c,def
hello"${leading}" | hello  ab c
hello${leading} | hello,ab,c
# next line MUST have 3 trailing spaces, don't erase them!
ENV trailing=ab c<3 spaces>
hello${trailing} | helloab,c
hello${trailing}d | helloab,c,d
hello"${trailing}"d | helloab c   d
# next line MUST have 3 trailing spaces, don't erase them!
hel"lo${trailing}" | helloab c<3 spaces>
hello" there  " | hello there<2 spaces>
hello there     | hello,there
hello\\ there | hello there
hello" there | error
hello\\" there | hello",there
hello"\\\\there" | hello\\there
hello"\\there" | hello\\there
hello'\\\\there' | hello\\\\there
hello'\\there' | hello\\there
hello'$there' | hello$there
"""

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases() -> list[tuple[str, str]]:
    cases = []
    for line in ENV_VAR_TABLE.splitlines():
        platform, source, expected = (part.strip() for part in line.split("|"))
        if platform in ("A", "U"):
            cases.append((source, expected))
    return cases


def _words_cases() -> list[tuple[dict[str, str], str, list[str]]]:
    cases = []
    env: dict[str, str] = {}
    for raw in WORDS_TABLE.splitlines():
        line = re.sub(r"<(\d) spaces>", lambda m: " " * int(m[1]), raw)
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            key, _, value = line[4:].lstrip(" ").partition("=")
            env[key] = value
            continue
        test, expected = line.split("|")
        cases.append((dict(env), test.strip(), expected.lstrip(" ").split(",")))
    return cases


@pytest.mark.parametrize(("source", "expected"), _env_var_cases())
def test_env_var_table(source: str, expected: str) -> None:
    lex = ShellLex("\\")
    if expected == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(source, ENV)
    else:
        assert lex.process_word(source, ENV) == expected


@pytest.mark.parametrize(("env", "source", "expected"), _words_cases())
def test_words_table(env: dict[str, str], source: str, expected: list[str]) -> None:
    lex = ShellLex("\\")
    try:
        got = lex.process_words(source, env)
    except ExpansionError:
        got = ["error"]
    assert got == expected


def test_mandatory_vars() -> None:
    lex = ShellLex()
    set_env = {"VAR": "plain", "ARG": "x"}
    empty_env = {"VAR": "", "ARG": "x"}
    unset_env = {"ARG": "x"}
    no_empty = "${VAR:?message here$ARG}"
    no_unset = "${VAR?message here$ARG}"

    assert lex.process_word(no_empty, set_env) == "plain"
    for env in (empty_env, unset_env):
        with pytest.raises(ExpansionError, match="message herex"):
            lex.process_word(no_empty, env)

    assert lex.process_word(no_unset, set_env) == "plain"
    assert lex.process_word(no_unset, empty_env) == ""
    with pytest.raises(ExpansionError, match="VAR: message herex"):
        lex.process_word(no_unset, unset_env)


def test_mandatory_default_messages() -> None:
    lex = ShellLex()
    with pytest.raises(ExpansionError, match="X: is not allowed to be unset"):
        lex.process_word("${X:?}", {})
    with pytest.raises(ExpansionError, match="X: is not allowed to be empty"):
        lex.process_word("${X:?}", {"X": ""})
    with pytest.raises(ExpansionError, match="X: is not allowed to be unset"):
        lex.process_word("${X?}", {})


def test_error_message_names_the_word() -> None:
    with pytest.raises(ExpansionError) as info:
        ShellLex().process_word("a${b", {})
    assert info.value.message == "failed to process \"a${b\": missing ':' in substitution"
    with pytest.raises(ExpansionError, match="bad substitution"):
        ShellLex().process_word("${}", {})
    with pytest.raises(ExpansionError, match="missing '}'"):
        ShellLex().process_word("${a:-b", {})
    with pytest.raises(ExpansionError, match=r"unsupported modifier \(:=\)"):  # BuildKit's chs: ":="
        ShellLex().process_word("${a:=b}", {})


@pytest.mark.parametrize(
    ("source", "expected"),
    # In the current Dockerfile reference (BuildKit v0.13+), rejected by v0.12.5; users expect them.
    [
        ("${A-x}", "xax"), ("${U-x}", "x"), ("${E-x}", ""),
        ("${A+y}", "y"), ("${U+y}", ""), ("${E+y}", "y"),
        ("${P#*/}", "a/b/c.tar.gz"), ("${P##*/}", "c.tar.gz"),
        ("${P%.*}", "/a/b/c.tar"), ("${P%%.*}", "/a/b/c"),
        ("${P#/[ab]}", "/a/b/c.tar.gz"), ("${Q#/[ab]}", "/c"), ("${P%.t?r.gz}", "/a/b/c"), ("${P#nomatch}", "/a/b/c.tar.gz"),
        ("${U#x}", ""), ("${P#${S}}", "/b/c.tar.gz"),
    ],
)
def test_later_forms(source: str, expected: str) -> None:
    env = {"A": "xax", "E": "", "P": "/a/b/c.tar.gz", "S": "/a", "Q": "/[ab]/c"}
    assert ShellLex().process_word(source, env) == expected


def test_later_forms_kept_when_skipping_unset() -> None:
    lex = ShellLex(skip_unset_env=True)
    assert lex.process_word("${U-x}", {}) == "${U-x}"
    assert lex.process_word("${U%%x}", {}) == "${U%%x}"


def test_replacement_form_is_not_supported() -> None:
    with pytest.raises(ExpansionError, match="missing ':' in substitution"):
        ShellLex().process_word("${A/x/y}", {"A": "xax"})


def test_colon_forms_with_empty_and_unset() -> None:
    lex = ShellLex()
    assert lex.process_word("${NULL:-d}", ENV) == "d"
    assert lex.process_word("${NULL:+d}", ENV) == ""
    assert lex.process_word("${PWD:+d}", ENV) == "d"
    assert lex.process_word("${UNSET:+d}", ENV) == ""


def test_special_and_numeric_parameters() -> None:
    lex = ShellLex()
    env = {"1": "one", "12": "twelve", "@": "at", "_x": "under"}
    assert lex.process_word("$12x", env) == "twelvex"
    assert lex.process_word("${1}", env) == "one"
    assert lex.process_word("$@x", env) == "atx"
    assert lex.process_word("$_x", env) == "under"
    assert lex.process_word("$ x", env) == "$ x"


def test_matches() -> None:
    lex = ShellLex()
    word, matched = lex.process_word_with_matches("foo ${BAR} ${UNUSED}", {"ANOTHER": "bar", "BAR": "baz"})
    assert (word, matched) == ("foo baz ", {"BAR"})
    word, matched = lex.process_word_with_matches("foo ${BAR:-abc} ${UNUSED}", {"ANOTHER": "bar"})
    assert (word, matched) == ("foo abc ", set())
    _, matched = lex.process_word_with_matches("$A ${B:+x} ${C:-y} '$D' \\$E", dict.fromkeys("ABCDE", "v"))
    assert matched == {"A", "B", "C"}


def test_platform_release_name() -> None:
    release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz"
    base = {"VERSION": "v1.2.3", "TARGETOS": "linux"}
    lex = ShellLex()
    assert lex.process_word(release, {**base, "TARGETARCH": "arm", "TARGETVARIANT": "v7"}) == (
        "something-v1.2.3.linux-arm-v7.tar.gz"
    )
    assert lex.process_word(release, {**base, "TARGETARCH": "arm64", "TARGETVARIANT": ""}) == (
        "something-v1.2.3.linux-arm64.tar.gz"
    )
    assert lex.process_word(release, {**base, "TARGETARCH": "arm64"}) == "something-v1.2.3.linux-arm64.tar.gz"


def test_raw_quotes() -> None:
    lex = ShellLex(raw_quotes=True)
    assert lex.process_word("a'b c'\"$X d\"", {"X": "x"}) == "a'b c'\"x d\""
    assert lex.process_words("'a b' \"c d\"", {}) == ["'a b'", '"c d"']


def test_raw_escapes() -> None:
    lex = ShellLex(raw_escapes=True)
    assert lex.process_word("a\\ b\\$X", {"X": "x"}) == "a\\ b\\$X"
    assert lex.process_word('"a\\"b"', {}) == 'a\\"b'
    # Inside double quotes an escape before an ordinary character is written twice (as BuildKit does).
    assert lex.process_word('"a\\tb"', {}) == "a\\\\tb"


def test_skip_unset_env() -> None:
    lex = ShellLex(skip_unset_env=True)
    env = {"SET": "s", "EMPTY": ""}
    assert lex.process_word("$SET $UNSET ${UNSET} ${EMPTY}", env) == "s $UNSET ${UNSET} "
    assert lex.process_word("${UNSET:-d} ${UNSET:+d} ${UNSET:?m} ${UNSET?m}", env) == (
        "${UNSET:-d} ${UNSET:+d} ${UNSET:?m} ${UNSET?m}"
    )
    assert lex.process_word("${EMPTY:-d}", env) == "d"
    with pytest.raises(ExpansionError, match="EMPTY: is not allowed to be empty"):
        lex.process_word("${EMPTY:?}", env)


def test_raw_quotes_and_skip_unset_together() -> None:
    lex = ShellLex(raw_quotes=True, skip_unset_env=True)
    assert lex.process_words("'$A' \"$A $B\" $B", {"B": "b c"}) == ["'$A'", '"$A b c"', "b", "c"]


def test_skip_process_quotes() -> None:
    lex = ShellLex(skip_process_quotes=True)
    assert lex.process_word("echo '$A' \"$A\"\n", {"A": "x"}) == "echo 'x' \"x\"\n"


def test_backtick_escape() -> None:
    lex = ShellLex("`")
    env = {"P": "/p"}
    assert lex.process_word("`$P", env) == "$P"
    assert lex.process_word("C:\\dir\\$P", env) == "C:\\dir\\/p"
    assert lex.process_word('"a`"b"', env) == 'a"b'
    assert lex.process_word("a`` b", env) == "a` b"
    assert lex.process_words("a` b c", env) == ["a b", "c"]


def test_leading_bom_is_skipped() -> None:
    assert ShellLex().process_word("\ufeff$A", {"A": "a"}) == "a"


def test_go_whitespace_rules_for_splitting() -> None:
    # U+001F is whitespace for Python but not for Go; U+00A0 is whitespace for both.
    assert ShellLex().process_words("a\x1fb c\xa0d", {}) == ["a\x1fb", "c", "d"]


def test_deep_nesting_is_an_expansion_error() -> None:
    deep = "${A:-" * 5000 + "x" + "}" * 5000
    with pytest.raises(ExpansionError):
        ShellLex().process_word(deep, {})


def test_bad_escape_token() -> None:
    with pytest.raises(ValueError):
        ShellLex("ab")


_ALPHABET = st.sampled_from([*"ab $\\`'\"{}:?+-=#%/_1@\t\n", "é", "\ufeff", "\x00"])


@settings(max_examples=400, deadline=None)
@given(
    word=st.one_of(st.text(), st.text(alphabet=_ALPHABET)),
    escape=st.sampled_from(["\\", "`"]),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
)
def test_only_expansion_errors_escape(word: str, escape: str, flags: tuple[bool, bool, bool, bool]) -> None:
    raw_quotes, raw_escapes, skip_unset, skip_quotes = flags
    lex = ShellLex(
        escape,
        raw_quotes=raw_quotes,
        raw_escapes=raw_escapes,
        skip_unset_env=skip_unset,
        skip_process_quotes=skip_quotes,
    )
    env = {"a": "x y", "b": "", "_1": "z"}
    try:
        word_result, matched = lex.process_word_with_matches(word, env)
        words = lex.process_words(word, env)
    except ExpansionError:
        return
    assert isinstance(word_result, str)
    assert matched <= set(env)
    assert all(words)
