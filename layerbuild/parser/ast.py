"""The parser's typed result: frozen dataclasses with source positions, one per instruction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Heredoc:
    """One `<<NAME` body attached to a RUN/COPY/ADD instruction.

    `content` is the body as written (with its line ends, without the terminator line); for
    `<<-` (chomp) the leading tabs are still there, as BuildKit keeps them until it builds.
    `expand` is False when any part of the name was quoted (`<<'EOF'`, `<<E"OF"`).
    """

    name: str
    file_descriptor: int
    content: str
    expand: bool = True
    chomp: bool = False

    def chomped_content(self) -> str:
        """The content as a build sees it: leading tabs removed from every line for `<<-`."""
        if not self.chomp:
            return self.content
        return "".join(line.lstrip("\t") for line in self.content.splitlines(keepends=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file_descriptor": self.file_descriptor,
            "content": self.content,
            "expand": self.expand,
            "chomp": self.chomp,
        }


@dataclass(frozen=True)
class Instruction:
    """One instruction, as BuildKit's parser sees it.

    `cmd` is the lower-cased keyword; for ONBUILD, `inner` is the triggered instruction and
    `sub_cmd` its keyword. `value` is split exactly as BuildKit splits it (for ONBUILD, the inner
    instruction's arguments). `original` is the logical line (continuations joined). Lines are
    1-based physical lines; `column` is the 1-based column of the keyword on `start_line`.
    `keyword` is the keyword as written (its case kept) for messages.
    """

    cmd: str
    original: str
    start_line: int
    end_line: int
    flags: tuple[str, ...] = ()
    value: tuple[str, ...] = ()
    json: bool = False
    heredocs: tuple[Heredoc, ...] = ()
    inner: Instruction | None = None
    column: int = 1
    keyword: str = ""

    @property
    def sub_cmd(self) -> str | None:
        return self.inner.cmd if self.inner is not None else None

    def to_json(self) -> dict[str, Any]:
        """The `parse --json` contract: the official parser's node fields (see DESIGN.md)."""
        args_from = self.inner if self.inner is not None else self
        value = list(args_from.value)
        if args_from is not self and args_from.inner is not None:
            # `ONBUILD ONBUILD x`: the official parser's node holds the nested trigger as a
            # child, which its argument list shows as one empty string.
            value = [""]
        return {
            "cmd": self.cmd,
            "sub_cmd": self.sub_cmd,
            "json": args_from.json,
            "original": self.original_with_heredocs(),
            "start_line": self.start_line,
            "end_line": self.end_line,
            "flags": list(self.flags),
            "value": value,
            "heredocs": [h.to_json() for h in self.heredocs],
        }

    def original_with_heredocs(self) -> str:
        """The logical line followed by each heredoc body and terminator, as the oracle reports it."""
        if not self.heredocs:
            return self.original
        parts = [self.original, "\n"]
        for doc in self.heredocs:
            parts.append(doc.content)
            parts.append(doc.name + "\n")
        return "".join(parts)


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: its instructions in order, its parser directives, its warnings."""

    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    directives: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    filename: str = "Dockerfile"
    lines: tuple[str, ...] = ()

    def source_line(self, number: int) -> str | None:
        """The physical line `number` (1-based) without its line end, for error messages."""
        if 1 <= number <= len(self.lines):
            return self.lines[number - 1]
        return None

    def to_json(self) -> dict[str, Any]:
        return {"instructions": [i.to_json() for i in self.instructions]}


# -- a lossless plain form, so a parsed Dockerfile can be kept and read back without parsing -------


def _heredoc_state(doc: Heredoc) -> list[Any]:
    return [doc.name, doc.file_descriptor, doc.content, doc.expand, doc.chomp]


def _instruction_state(node: Instruction) -> dict[str, Any]:
    return {
        "c": node.cmd, "o": node.original, "s": node.start_line, "e": node.end_line, "f": list(node.flags),
        "v": list(node.value), "j": node.json, "h": [_heredoc_state(d) for d in node.heredocs],
        "i": _instruction_state(node.inner) if node.inner is not None else None, "col": node.column,
        "k": node.keyword,
    }  # fmt: skip


def _instruction(state: dict[str, Any]) -> Instruction:
    return Instruction(
        cmd=state["c"], original=state["o"], start_line=state["s"], end_line=state["e"], flags=tuple(state["f"]),
        value=tuple(state["v"]), json=state["j"], heredocs=tuple(Heredoc(*h) for h in state["h"]),
        inner=_instruction(state["i"]) if state["i"] is not None else None, column=state["col"], keyword=state["k"],
    )  # fmt: skip


def to_state(df: Dockerfile) -> dict[str, Any]:
    """`df` as JSON-able data; `from_state` gives back an equal Dockerfile."""
    return {"instructions": [_instruction_state(i) for i in df.instructions], "escape": df.escape,
            "directives": dict(df.directives), "warnings": list(df.warnings), "filename": df.filename,
            "lines": list(df.lines)}


def from_state(state: dict[str, Any]) -> Dockerfile:
    return Dockerfile(
        instructions=tuple(_instruction(i) for i in state["instructions"]), escape=state["escape"],
        directives=dict(state["directives"]), warnings=tuple(state["warnings"]), filename=state["filename"],
        lines=tuple(state["lines"]),
    )  # fmt: skip
