"""Every case of the BuildKit parser conformance data: our parser gives the official answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerbuild.errors import DockerfileSyntaxError
from layerbuild.parser import dump, parse
from tests.conftest import conformance_root, need_conformance

ROOT = conformance_root()
CASES = sorted(p.parent for p in ROOT.rglob("expected.json")) if ROOT else []


def _id(path: Path) -> str:
    assert ROOT is not None
    return str(path.relative_to(ROOT))


def _normalise(instr: dict[str, object]) -> dict[str, object]:
    out = dict(instr)
    out["heredocs"] = [
        {k: h[k] for k in ("name", "file_descriptor", "content")}  # type: ignore[index]
        for h in instr.get("heredocs", [])  # type: ignore[union-attr]
    ]
    return out


def test_cases_found() -> None:
    if ROOT is None:
        need_conformance()
    assert len(CASES) >= 74


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_case(case: Path) -> None:
    expected = json.loads((case / "expected.json").read_text(encoding="utf-8"))
    data = (case / "Dockerfile").read_bytes()
    if isinstance(expected, dict):
        with pytest.raises(DockerfileSyntaxError):
            parse(data)
        return
    got = parse(data).to_json()["instructions"]
    assert [_normalise(i) for i in got] == [_normalise(i) for i in expected]


@pytest.mark.parametrize("case", [c for c in CASES if (c / "result").is_file()], ids=_id)
def test_dump_matches_buildkit_result(case: Path) -> None:
    data = (case / "Dockerfile").read_bytes()
    assert dump(parse(data)) == (case / "result").read_text(encoding="utf-8")
