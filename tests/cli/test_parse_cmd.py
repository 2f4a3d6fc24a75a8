"""`layerbuild parse`, run in-process through main(argv) and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.cli.main import main
from tests.conftest import REPO


def test_json_output_is_the_contract(conformance: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = conformance / "extra" / "heredoc-copy-two-files"
    assert main(["parse", "--json", str(case / "Dockerfile")]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = json.loads((case / "expected.json").read_text())
    for got in out["instructions"]:
        for doc in got["heredocs"]:
            assert set(doc) == {"name", "file_descriptor", "content", "expand", "chomp"}
            del doc["expand"], doc["chomp"]
    assert out == {"instructions": expected}


def test_pretty_output_names_every_instruction(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", str(REPO / "samples" / "hello" / "Dockerfile")]) == 0
    out = capsys.readouterr().out
    for keyword in ("FROM", "COPY", "RUN", "ENV", "ARG", "LABEL", "WORKDIR", "USER", "CMD"):
        assert keyword in out
    assert "<<EOF" in out
    assert "instructions, 2 stage(s)" in out


def test_syntax_error_is_located_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text('FROM alpine\nCMD [ "echo", [ "nested" ] ]\n')
    assert main(["parse", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:5: when using JSON array syntax" in err
    assert '    2 | CMD [ "echo", [ "nested" ] ]' in err
    assert "^" in err and "hint:" in err
    assert "Traceback" not in err


def test_unterminated_heredoc_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM alpine\nRUN <<END\necho hi\n")
    assert main(["parse", "--json", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:1: unterminated heredoc" in err
    assert "'END'" in err


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", str(tmp_path / "nope")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse"]) == 2
    assert main([]) == 2


def test_console_script_runs(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text("FROM scratch\nCOPY a /a\n")
    exe = Path(sys.executable).with_name("layerbuild")
    proc = subprocess.run([str(exe), "parse", "--json", str(df)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["instructions"][1]["value"] == ["a", "/a"]


def test_pretty_mode_checks_instructions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM alpine\nCOPPY a b\n")
    assert main(["parse", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:1: unknown instruction: COPPY" in err
    assert "did you mean COPY?" in err
    # --json is the parser's answer alone, as the official parser gives it: unknown keywords pass.
    assert main(["parse", "--json", str(bad)]) == 0


def test_flag_not_taken_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM alpine\nRUN --from=x echo\n")
    assert main(["parse", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:5: unknown flag: from" in err
    assert "hint: RUN takes" in err


def test_internal_errors_do_not_print_tracebacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import layerbuild.parser

    def boom(path: str) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(layerbuild.parser, "parse_file", boom)
    monkeypatch.delenv("LAYERBUILD_DEBUG", raising=False)
    assert main(["parse", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err


def test_brackets_print_as_written_not_as_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table view and its warnings show `[...]` of a Dockerfile verbatim (a malformed flag such as
    `--timeout"3s CMD ["/bin/test"]` once made the terminal renderer fail with an internal error)."""
    path = tmp_path / "Dockerfile"
    path.write_text('FROM scratch\nHEALTHCHECK --interval=30s --timeout"3s CMD ["/bin/test", "-f", "/x"]\n'
                    'LABEL a="[/bold]"\n')
    code = main(["parse", str(path)])
    out, err = capsys.readouterr()
    assert "internal error" not in err and "MarkupError" not in err
    assert "[/bin/test" in out and "[/bold]" in out
    assert code == 2 and "unknown flag" in err  # the malformed flag is still reported, with its line


def test_tty_progress_prints_warnings_verbatim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The terminal renderer: a warning naming a build-arg like `[/q]` prints as it is."""
    (tmp_path / "Dockerfile").write_text('FROM scratch\nLABEL a="[/bold]"\n')
    code = main(["--root", str(tmp_path / "store"), "build", "--progress", "tty", "--build-arg", "[/q]=1",
                 str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and "internal error" not in err, err
    assert "build-arg [/q] was not consumed" in err
