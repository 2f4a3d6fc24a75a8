"""Docker's own pattern tables (moby/patternmatcher, the .dockerignore docs) against our matcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerbuild.context.ignore import (
    BadPatternError,
    Matcher,
    find_ignore_file,
    glob_regex,
    go_clean,
    read_ignore_lines,
)

EXACT, INEXACT, FAIL = "exact", "inexact", "fail"

# patternmatcher_test.go TestMatches: (pattern, path, result); "inexact" matches only through a parent.
MATCHES = [
    ("**", "file", EXACT),
    ("**", "file/", EXACT),
    ("**/", "file", EXACT),
    ("**/", "file/", EXACT),
    ("**", "/", EXACT),
    ("**/", "/", EXACT),
    ("**", "dir/file", EXACT),
    ("**/", "dir/file", EXACT),
    ("**", "dir/file/", EXACT),
    ("**/", "dir/file/", EXACT),
    ("**/**", "dir/file", EXACT),
    ("**/**", "dir/file/", EXACT),
    ("dir/**", "dir/file", EXACT),
    ("dir/**", "dir/file/", EXACT),
    ("dir/**", "dir/dir2/file", EXACT),
    ("dir/**", "dir/dir2/file/", EXACT),
    ("**/dir", "dir", EXACT),
    ("**/dir", "dir/file", INEXACT),
    ("**/dir2/*", "dir/dir2/file", EXACT),
    ("**/dir2/*", "dir/dir2/file/", INEXACT),
    ("**/dir2/**", "dir/dir2/dir3/file", EXACT),
    ("**/dir2/**", "dir/dir2/dir3/file/", EXACT),
    ("**file", "file", EXACT),
    ("**file", "dir/file", EXACT),
    ("**/file", "dir/file", EXACT),
    ("**file", "dir/dir/file", EXACT),
    ("**/file", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file", EXACT),
    ("**/file*", "dir/dir/file.txt", EXACT),
    ("**/file*txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt", "dir/dir/file.txt", EXACT),
    ("**/file*.txt*", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt", "dir/dir/file.txt", EXACT),
    ("**/**/*.txt2", "dir/dir/file.txt", FAIL),
    ("**/*.txt", "file.txt", EXACT),
    ("**/**/*.txt", "file.txt", EXACT),
    ("a**/*.txt", "a/file.txt", EXACT),
    ("a**/*.txt", "a/dir/file.txt", EXACT),
    ("a**/*.txt", "a/dir/dir/file.txt", EXACT),
    ("a/*.txt", "a/dir/file.txt", FAIL),
    ("a/*.txt", "a/file.txt", EXACT),
    ("a/*.txt**", "a/file.txt", EXACT),
    ("a[b-d]e", "ae", FAIL),
    ("a[b-d]e", "ace", EXACT),
    ("a[b-d]e", "aae", FAIL),
    ("a[^b-d]e", "aze", EXACT),
    (".*", ".foo", EXACT),
    (".*", "foo", FAIL),
    ("abc.def", "abcdef", FAIL),
    ("abc.def", "abc.def", EXACT),
    ("abc.def", "abcZdef", FAIL),
    ("abc?def", "abcZdef", EXACT),
    ("abc?def", "abcdef", FAIL),
    ("**/foo/bar", "foo/bar", EXACT),
    ("**/foo/bar", "dir/foo/bar", EXACT),
    ("**/foo/bar", "dir/dir2/foo/bar", EXACT),
    ("abc/**", "abc", FAIL),
    ("abc/**", "abc/def", EXACT),
    ("abc/**", "abc/def/ghi", EXACT),
    ("**/.foo", ".foo", EXACT),
    ("**/.foo", "bar.foo", FAIL),
    ("a(b)c/def", "a(b)c/def", EXACT),
    ("a(b)c/def", "a(b)c/xyz", FAIL),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", EXACT),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        EXACT,
    ),
    ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", EXACT),
    ("a\\\\", "a\\", EXACT),
    ("a\\*b", "a*b", EXACT),
]

MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", FAIL),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", EXACT),
    (
        ["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        FAIL,
    ),
    (["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", FAIL),
    # the simple tests at the top of patternmatcher_test.go
    (["*"], "fileutils.go", EXACT),
    (["*.go"], "fileutils.go", EXACT),
    (["!fileutils.go", "*.go"], "fileutils.go", EXACT),
    (["docs", "!docs/README.md"], "docs/README.md", FAIL),
    (["docs/", "!docs/README.md"], "docs/README.md", FAIL),
    (["docs/*", "!docs/README.md"], "docs/README.md", FAIL),
    (["*.go", "!fileutils.go"], "fileutils.go", FAIL),
    # the .dockerignore documentation
    (["*/temp*"], "somedir/temporary.txt", EXACT),
    (["*/temp*"], "somedir/temp", EXACT),
    (["*/temp*"], "temp", FAIL),
    (["*/*/temp*"], "somedir/subdir/temporary.txt", EXACT),
    (["temp?"], "tempa", EXACT),
    (["temp?"], "temp/x", FAIL),
    (["**/*.go"], "a/b/c.go", EXACT),
    (["*.md", "!README.md"], "README.md", FAIL),
    (["*.md", "!README.md"], "CHANGES.md", EXACT),
    (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", EXACT),
    (["*.md", "!README*.md", "README-secret.md"], "README-public.md", FAIL),
    (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", FAIL),
    (["/foo/bar"], "foo/bar", EXACT),
    (["./foo/../bar"], "bar", EXACT),
]


def _walk_match(m: Matcher, text: str) -> bool:
    # MatchesUsingParentResults the way a walker calls it: the parents first, passing their info down.
    parts = [p for p in text.split("/") if p]
    info = None
    for i in range(len(parts) - 1):
        _, info = m.matches("/".join(parts[: i + 1]), info or ())
    return m.matches("/".join(parts) if parts else text, info or ())[0]


@pytest.mark.parametrize(("pattern", "text", "result"), MATCHES)
def test_patternmatcher_table(pattern: str, text: str, result: str) -> None:
    m = Matcher([pattern])
    # The exact form (no parent matching) on the path as given:
    assert m.patterns[0].match(text) == (result == EXACT)
    assert m.matches(text)[0] == (result != FAIL)


@pytest.mark.parametrize(("patterns", "text", "result"), MULTI)
def test_multi_pattern_table(patterns: list[str], text: str, result: str) -> None:
    m = Matcher(read_ignore_lines("\n".join(patterns)))
    assert m.matches(text)[0] == (result != FAIL)
    assert _walk_match(m, text) == (result != FAIL)


# Go's filepath.Match tests (as copied into patternmatcher_test.go): pattern, name, match, bad pattern.
GO_MATCH = [
    ("abc", "abc", True, False),
    ("*", "abc", True, False),
    ("*c", "abc", True, False),
    ("a*", "a", True, False),
    ("a*", "abc", True, False),
    ("a*", "ab/c", False, False),
    ("a*/b", "abc/b", True, False),
    ("a*/b", "a/c/b", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True, False),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False, False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False, False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True, False),
    ("a*b?c*x", "abxbbxdbxebxczzy", False, False),
    ("ab[c]", "abc", True, False),
    ("ab[b-d]", "abc", True, False),
    ("ab[e-g]", "abc", False, False),
    ("ab[^c]", "abc", False, False),
    ("ab[^b-d]", "abc", False, False),
    ("ab[^e-g]", "abc", True, False),
    ("a\\*b", "a*b", True, False),
    ("a\\*b", "ab", False, False),
    ("a?b", "a☺b", True, False),
    ("a[^a]b", "a☺b", True, False),
    ("a???b", "a☺b", False, False),
    ("a[^a][^a][^a]b", "a☺b", False, False),
    ("[a-ζ]*", "α", True, False),
    ("*[a-ζ]", "A", False, False),
    ("a?b", "a/b", False, False),
    ("a*b", "a/b", False, False),
    ("[\\]a]", "]", True, False),
    ("[\\-]", "-", True, False),
    ("[x\\-]", "x", True, False),
    ("[x\\-]", "-", True, False),
    ("[x\\-]", "z", False, False),
    ("[\\-x]", "x", True, False),
    ("[\\-x]", "-", True, False),
    ("[\\-x]", "a", False, False),
    ("[]a]", "]", False, True),
    ("[-]", "-", False, True),
    ("[x-]", "x", False, True),
    ("[-x]", "x", False, True),
    ("\\", "a", False, True),
    ("[a-b-c]", "a", False, True),
    ("[", "a", False, True),
    ("[^", "a", False, True),
    ("[^bc", "a", False, True),
    ("a[", "a", False, True),
    ("*x", "xxx", True, False),
]


@pytest.mark.parametrize(("pattern", "name", "match", "bad"), GO_MATCH)
def test_go_filepath_match(pattern: str, name: str, match: bool, bad: bool) -> None:
    if bad:
        with pytest.raises(BadPatternError):
            glob_regex(pattern)
        with pytest.raises(BadPatternError):
            Matcher([pattern])
        return
    assert (glob_regex(pattern).match(name) is not None) == match


def test_read_ignore_file_like_ignorefile_readall() -> None:
    content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! "
    assert read_ignore_lines(content) == [
        "test1",
        "test2",
        "a/file/here",
        "lastfile",
        "!inverted/abs/path",
        "!",
        "!",
    ]
    assert read_ignore_lines("\ufeff# bom\n  spaced  \n./x/./y/\n") == ["spaced", "x/y"]
    with pytest.raises(BadPatternError):
        Matcher(["!"])


def test_root_is_never_excluded() -> None:
    assert not Matcher(["*", "**"]).matches_path(".")


@pytest.mark.parametrize(
    ("patterns", "directory", "may"),
    [
        (["docs"], "docs", False),
        (["docs", "!docs/README.md"], "docs", True),
        (["docs", "!other/README.md"], "docs", False),
        (["docs", "!d*/x"], "docs", True),
        (["docs", "!**/x"], "docs", True),
        (["a/b", "!a"], "a/b", False),
    ],
)
def test_may_reinclude_below(patterns: list[str], directory: str, may: bool) -> None:
    assert Matcher(patterns).may_reinclude_below(directory) == may


def test_clean() -> None:
    assert go_clean("") == "."
    assert go_clean("./a//b/../c/") == "a/c"
    assert go_clean("/../a") == "/a"
    assert go_clean("../a") == "../a"
    assert go_clean("//a") == "/a"


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    df = tmp_path / "sub" / "app.Dockerfile"
    df.parent.mkdir()
    df.write_text("FROM scratch\n")
    assert find_ignore_file(tmp_path, df) == tmp_path / ".dockerignore"
    (tmp_path / "sub" / "app.Dockerfile.dockerignore").write_text("b\n")
    assert find_ignore_file(tmp_path, df) == tmp_path / "sub" / "app.Dockerfile.dockerignore"
    assert find_ignore_file(tmp_path, None) == tmp_path / ".dockerignore"
