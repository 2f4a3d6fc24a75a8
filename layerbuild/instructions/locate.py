"""Source locations for instruction errors: the line and column of a word inside an instruction."""

from __future__ import annotations

from layerbuild.errors import DockerfileSyntaxError, ExpansionError
from layerbuild.parser.ast import Dockerfile, Instruction


def locate(dockerfile: Dockerfile, node: Instruction, near: str | None) -> tuple[int, int]:
    """(line, column), 1-based, of the first `near` inside `node`'s lines, else of its keyword."""
    if near and node.start_line > 0:
        for number in range(node.start_line, max(node.end_line, node.start_line) + 1):
            text = dockerfile.source_line(number)
            if text is None:
                break
            # Search after the keyword: flags and arguments come after it.
            start = node.column - 1 + len(node.keyword) if number == node.start_line else 0
            index = text.find(near, max(start, 0))
            if index >= 0:
                return number, index + 1
    return node.start_line, node.column


def syntax_error(
    dockerfile: Dockerfile,
    node: Instruction,
    message: str,
    *,
    hint: str | None = None,
    near: str | None = None,
) -> DockerfileSyntaxError:
    """A DockerfileSyntaxError pointing at `near` (or the keyword) in `node`."""
    line, column = locate(dockerfile, node, near)
    return DockerfileSyntaxError(
        message,
        filename=dockerfile.filename,
        line=line,
        column=column,
        source_line=dockerfile.source_line(line),
        hint=hint,
    )


def expansion_error(
    dockerfile: Dockerfile, node: Instruction, error: ExpansionError, *, near: str | None = None
) -> ExpansionError:
    """`error` (raised by the shell lexer, without a place) placed at `near` in `node`."""
    line, column = locate(dockerfile, node, near)
    hint = error.hint or "check the ${...} form; `\\$` (or the escape character) keeps a literal $"
    return ExpansionError(
        error.message,
        filename=dockerfile.filename,
        line=line,
        column=column,
        source_line=dockerfile.source_line(line),
        hint=hint,
    )
