"""The Lark grammars of layerbuild, shipped inside the wheel as `layerbuild.grammar`."""

from importlib.resources import files


def read(name: str) -> str:
    """The text of grammar `name` (e.g. ``"dockerfile.lark"``) from the installed package."""
    return (files(__name__) / name).read_text(encoding="utf-8")
