"""A build's Dockerfile lines are split through a per-user memo of earlier splits (core._SplitMemo):
the same AST as the grammar gives, without loading Lark for lines seen before; the memo is named by
what an answer depends on, and a damaged one is ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerbuild.parser import core

REPO = Path(__file__).resolve().parents[2]

DOCKERFILE = """\
# syntax=docker/dockerfile:1
FROM --platform=$BUILDPLATFORM busybox AS base
ARG X=1
RUN --mount=type=cache,target=/c --network=none echo "$X" \\
    && echo more
COPY --chown=1:1 --chmod=644 ["a b", "/dst/"]
ONBUILD RUN echo trigger
HEALTHCHECK --interval=5s CMD ["true"]
RUN <<EOF
echo héllo
EOF
LABEL a=b c="d e"
CMD ["sh", "-c", "echo done"]
"""

_PROBE = """
import json, sys
from layerbuild.parser.core import parse
df = parse(sys.stdin.read(), remember=True)
print(json.dumps({"lark": "lark" in sys.modules, "ast": [i.to_json() for i in df.instructions]}))
"""


def _parse_in_child(cache: Path, text: str) -> dict[str, object]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", _PROBE], input=text, capture_output=True, text=True, env=env,
                          cwd=REPO, check=True)
    got: dict[str, object] = json.loads(done.stdout)
    return got


def test_lines_split_before_are_answered_without_lark_and_the_same(tmp_path: Path) -> None:
    expected = [i.to_json() for i in core.parse(DOCKERFILE).instructions]
    first = _parse_in_child(tmp_path, DOCKERFILE)
    assert first == {"lark": True, "ast": expected}
    (memo,) = (tmp_path / "layerbuild").glob("split-*.json")
    assert "RUN <<EOF" in json.loads(memo.read_text())
    assert _parse_in_child(tmp_path, DOCKERFILE) == {"lark": False, "ast": expected}
    # One new line: the grammar splits it, and the memo learns it.
    more = DOCKERFILE + "EXPOSE 80/tcp\n"
    assert _parse_in_child(tmp_path, more)["lark"] is True
    assert _parse_in_child(tmp_path, more) == {"lark": False, "ast": [i.to_json() for i in core.parse(more).instructions]}


def test_a_damaged_memo_is_ignored_and_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    memo = core._SplitMemo()
    path = memo._file()
    assert path is not None
    Path(path).write_text('{"FROM busybox": ["FROM", "not a list", 3], "RUN x": 7')  # cut short
    monkeypatch.setattr(core, "_MEMO", memo)
    df = core.parse("FROM busybox\nRUN x\n", remember=True)
    assert [i.value for i in df.instructions] == [("busybox",), ("x",)]
    assert json.loads(Path(path).read_text()) == {"FROM busybox": ["FROM", [], "busybox"], "RUN x": ["RUN", [], "x"]}


def test_the_memo_is_named_by_the_grammar_and_the_splitter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    name = core._SplitMemo()._file()
    changed = tmp_path / "dockerfile.lark"
    changed.write_text(core.grammar_text() + "\n// another grammar\n")
    monkeypatch.setattr(core, "_grammar_path", lambda: str(changed))
    assert core._SplitMemo()._file() not in (None, name)


def test_the_memo_keeps_the_latest_lines_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    memo = core._SplitMemo()
    monkeypatch.setattr(memo, "LIMIT", 3)
    monkeypatch.setattr(core, "_MEMO", memo)
    core.parse("FROM a\nRUN 1\nRUN 2\nRUN 3\nRUN 4\n", remember=True)
    path = memo._file()
    assert path is not None and list(json.loads(Path(path).read_text())) == ["RUN 2", "RUN 3", "RUN 4"]


def test_the_grammar_is_found_in_an_installed_package_and_in_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Path(core._grammar_path()) == REPO / "grammar" / "dockerfile.lark"  # this checkout
    site = tmp_path / "site-packages" / "layerbuild"
    (site / "parser").mkdir(parents=True)
    (site / "grammar").mkdir()
    (site / "grammar" / "dockerfile.lark").write_text("// shipped\n")
    monkeypatch.setattr(core, "__file__", str(site / "parser" / "core.py"))
    assert core._grammar_path() == str(site / "grammar" / "dockerfile.lark")
    assert core.grammar_text() == "// shipped\n"
