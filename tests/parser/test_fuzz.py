"""Whatever the input, the parser returns a Dockerfile or raises DockerfileSyntaxError, nothing else."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerbuild.errors import DockerfileSyntaxError
from layerbuild.parser import parse
from tests.conftest import REPO, conformance_root, need_conformance
from tests.parser.strategies import dockerfile_text


def _seeds() -> list[str]:
    files = list((REPO / "samples").glob("*/Dockerfile"))
    root = conformance_root()
    if root is not None:
        files += list(root.rglob("Dockerfile"))
    return [f.read_text(encoding="utf-8") for f in sorted(files)]


SEEDS = _seeds()


def check(data: str | bytes) -> None:
    try:
        result = parse(data)
    except DockerfileSyntaxError as exc:
        assert exc.line >= 1 and exc.column >= 1
        assert exc.message
        assert exc.render().startswith(exc.location)
        return
    assert result.instructions
    for node in result.instructions:
        assert 1 <= node.start_line <= node.end_line
        node.to_json()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text(text: str) -> None:
    check(text)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@settings(max_examples=300, deadline=None)
@given(dockerfile_text())
def test_generated_dockerfiles(text: str) -> None:
    check(text)


MUTATION_CHARS = st.sampled_from(list("\\`\n\r\t \"'[]{}$#<-=:,\x00\ufeff\u00a0é") + ["<<EOF", "\\\n", "--"])


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.integers(min_value=0, max_value=3))
        if action == 0:
            text = text[:pos] + draw(MUTATION_CHARS) + text[pos:]
        elif action == 1:
            text = text[:pos] + text[pos + draw(st.integers(1, 10)):]
        elif action == 2:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[draw(st.integers(0, len(lines) - 1))])
            text = "\n".join(lines)
        else:
            text = text[:pos] + draw(MUTATION_CHARS) + text[pos + 1:]
    return text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_real_dockerfiles(text: str) -> None:
    check(text)


def test_seeds_exist() -> None:
    if conformance_root() is None:
        need_conformance()  # the samples alone are too few seeds to call the mutation test meaningful
    assert len(SEEDS) > 50
    assert Path(REPO / "samples").is_dir()
