"""The command line's dispatch: only the verb being run is set up, and every verb is listed for help."""

from __future__ import annotations

import pytest

from layerbuild.cli.main import VERBS, _named_verb, build_parser, main


@pytest.mark.parametrize(("argv", "verb"), [
    (["build", "."], "build"),
    (["--root", "/r", "images", "--json"], "images"),
    (["--root=/r", "ps"], "ps"),
    (["--root", "build", "df"], "df"),  # `build` is --root's value here
    (["-h", "build"], None),
    (["--version"], None),
    (["bogus"], None),
    ([], None),
])
def test_the_named_verb(argv: list[str], verb: str | None) -> None:
    assert _named_verb(argv) == verb


def test_only_the_named_verb_is_set_up_but_help_lists_them_all() -> None:
    assert list(build_parser(["--root", "/r", "build", "."])[1]) == ["build"]
    assert list(build_parser(["--help"])[1]) == list(VERBS)
    assert list(build_parser()[1]) == list(VERBS)


def test_an_unknown_verb_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "invalid choice: 'bogus' (choose from 'build', 'parse'" in capsys.readouterr().err


def test_an_os_error_is_reported_plainly(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """What the system refuses (permissions, a full disk) is the user's to fix, not a bug to report."""
    import errno

    def refuse(args: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/some/file")

    parser, _ = build_parser(["df"])
    monkeypatch.setattr("layerbuild.cli.main.build_parser", lambda argv=None: (parser, {"df": refuse}))
    monkeypatch.delenv("LAYERBUILD_DEBUG", raising=False)
    assert main(["df"]) == 1
    err = capsys.readouterr().err
    assert err == "error: Permission denied: '/some/file'\n"
