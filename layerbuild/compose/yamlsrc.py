"""Compose files read as YAML 1.2 (ruamel.yaml), keeping each value's line for error messages.

`80:80` stays a string (YAML 1.2 has no base-60 numbers), `no` stays a string, anchors, aliases and
merge keys (`<<`) work. The `!reset` and `!override` tags of the merge rules come back as `Reset`
and `Override` wrappers; every other value is a plain dict, list, str, int, float, bool or None,
with the lines kept aside in a `Lines` map keyed by the value's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from layerbuild.errors import ComposeFileError

Path_ = tuple[str | int, ...]
# Aliases are expanded into plain values: a file whose aliases expand past this many values (the
# "billion laughs") is refused rather than filling the memory.
MAX_VALUES = 100_000


@dataclass(frozen=True)
class Reset:
    """`!reset VALUE`: the merged attribute is removed (set to its default)."""


@dataclass(frozen=True)
class Override:
    """`!override VALUE`: the merged attribute is replaced whole, not merged."""

    value: Any


@dataclass
class Lines:
    """The 1-based line of each value (and of each mapping key) by its path in one file."""

    filename: str
    at: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int:
        """The line of `path`, else of its nearest ancestor that has one (0: unknown)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.at:
                return self.at[path[:n]]
        return 0


def key_text(path: Path_) -> str:
    """`("services", "web", "ports", 0)` → `services.web.ports[0]`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load(text: str, filename: str) -> tuple[Any, Lines]:
    """Parse one compose file; ComposeFileError (with its line) if it is not valid YAML."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    yaml.version = (1, 2)
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        if "duplicate key" in str(exc):
            problem = "a key is given twice in one mapping"
        raise ComposeFileError(problem, filename=filename, line=line,
                               hint="the file must be a YAML mapping") from None
    except YAMLError as exc:
        raise ComposeFileError(f"invalid YAML: {exc}", filename=filename) from None
    except RecursionError:
        raise ComposeFileError("the YAML is nested too deeply", filename=filename) from None
    lines = Lines(filename)
    budget = [MAX_VALUES]
    try:
        plain = _plain(tree, (), lines, filename, budget)
    except RecursionError:
        raise ComposeFileError("the YAML is nested too deeply", filename=filename) from None
    if plain is None:
        plain = {}
    if not isinstance(plain, dict):
        raise ComposeFileError("the top level must be a mapping (services:, networks:, …)",
                               filename=filename, line=1)
    return plain, lines


def _plain(node: Any, path: Path_, lines: Lines, filename: str, budget: list[int]) -> Any:
    """ruamel's round-trip tree as plain values; lines recorded; `!reset`/`!override` unwrapped."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

    budget[0] -= 1
    if budget[0] < 0:
        raise ComposeFileError(f"the file expands to more than {MAX_VALUES} values (through aliases)",
                               filename=filename, hint="a compose file this large is almost certainly a mistake")

    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag in ("!reset", "!override"):
        inner = node.value if isinstance(node, TaggedScalar) else node
        if tag == "!reset":
            return Reset()
        if isinstance(node, CommentedMap):
            inner = {k: _plain(v, (*path, str(k)), lines, filename, budget) for k, v in node.items()}
        elif isinstance(node, CommentedSeq):
            inner = [_plain(v, (*path, i), lines, filename, budget) for i, v in enumerate(node)]
        return Override(inner)
    if tag is not None and tag.startswith("!") and not tag.startswith("!!"):
        raise ComposeFileError(f"unknown YAML tag {tag}", filename=filename, line=lines.line(path),
                               key=key_text(path), hint="compose files know only !reset and !override")
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                key = _scalar_key(key)
            child = (*path, key)
            try:
                lines.at[child] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError, AttributeError):
                lines.at[child] = lines.line(path)
            out[key] = _plain(value, child, lines, filename, budget)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            child = (*path, i)
            try:
                lines.at[child] = node.lc.item(i)[0] + 1
            except (KeyError, TypeError, AttributeError, IndexError):
                lines.at[child] = lines.line(path)
            items.append(_plain(value, child, lines, filename, budget))
        return items
    if isinstance(node, TaggedScalar):
        return str(node.value)
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return _integer(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _integer(node: int) -> int:
    """An integer; one written with a leading zero (`0440`) is octal, as docker compose's YAML parser
    (go-yaml, `strconv.ParseInt(text, 0, 64)`) reads it, where YAML 1.2 would read decimal."""
    width = getattr(node, "_width", None)
    if type(node).__name__ == "ScalarInt" and width and node >= 0:
        text = f"{int(node):0{width}d}"
        if len(text) > 1 and text[0] == "0" and set(text) <= set("01234567"):
            return int(text, 8)
    return int(node)


def _scalar_key(key: Any) -> str:
    """A mapping key that YAML read as a number or boolean, as the text compose uses (`8080`, `true`)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)
