"""BuildKit's AST dump format (`(run "echo" "hi")`), for golden tests in BuildKit's own terms."""

from __future__ import annotations

from layerbuild.parser.ast import Dockerfile, Instruction

_SIMPLE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
           "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's strconv.Quote: printable characters kept, the rest escaped."""
    out = ['"']
    for ch in text:
        if ch in _SIMPLE:
            out.append(_SIMPLE[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code <= 0xFFFF:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def dump_instruction(node: Instruction) -> str:
    text = node.cmd
    if node.flags:
        text += " [" + " ".join(go_quote(f) for f in node.flags) + "]"
    if node.inner is not None:
        text += " (" + dump_instruction(node.inner) + ")"
    for value in node.value:
        text += " " + go_quote(value)
    return text.strip()


def dump(dockerfile: Dockerfile) -> str:
    """The whole file, one `(...)` line per instruction, as BuildKit's `Node.Dump()` prints it."""
    return "".join("(" + dump_instruction(node) + ")\n" for node in dockerfile.instructions)
