"""Golden tests: the typed AST of every sample, as a stable JSON dump under tests/golden/parse/.

Regenerate after a deliberate change with `UPDATE_GOLDEN=1 pytest tests/parse/test_golden.py`
and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from layerbuild.parser import parse
from tests.conftest import REPO

SAMPLES = sorted((REPO / "samples").glob("*/Dockerfile"))
GOLDEN = REPO / "tests" / "golden" / "parser"


def typed_dump(path: Path) -> str:
    df = parse(path.read_bytes(), filename="Dockerfile")
    data = {
        "escape": df.escape,
        "directives": dict(df.directives),
        "warnings": list(df.warnings),
        "instructions": [dataclasses.asdict(i) for i in df.instructions],
    }
    return json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def test_every_sample_has_a_golden_file() -> None:
    assert SAMPLES
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(p.parent.name for p in SAMPLES)


@pytest.mark.parametrize("dockerfile", SAMPLES, ids=lambda p: p.parent.name)
def test_sample_ast(dockerfile: Path) -> None:
    golden = GOLDEN / dockerfile.parent.name / "ast.json"
    got = typed_dump(dockerfile)
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(got, encoding="utf-8")
    assert got == golden.read_text(encoding="utf-8")


def test_state_round_trip_is_lossless(conformance: Path) -> None:
    """What the build keeps of a parse (to_state) reads back equal, for every parsable case."""
    import json

    from layerbuild.errors import DockerfileSyntaxError
    from layerbuild.parser.ast import from_state, to_state

    checked = 0
    for path in sorted([*conformance.rglob("Dockerfile"), *SAMPLES]):
        try:
            df = parse(path.read_bytes(), filename=str(path))
        except DockerfileSyntaxError:
            continue
        assert from_state(json.loads(json.dumps(to_state(df)))) == df
        checked += 1
    assert checked > 60
