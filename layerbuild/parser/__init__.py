"""Dockerfile text to a typed AST, with BuildKit's splitting rules (Lark grammar + line pre-pass).

The AST types load without Lark; `parse` loads the grammar machinery on first use.
"""

from __future__ import annotations

from layerbuild.lazy import lazy_getattr

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.parser.ast import Dockerfile, Heredoc, Instruction
    from layerbuild.parser.core import parse, parse_file
    from layerbuild.parser.dump import dump

# The AST types too: a no-op build reads its Dockerfile through parser.limits and never parses it.
_LAZY = {"Dockerfile": "layerbuild.parser.ast", "Heredoc": "layerbuild.parser.ast", "Instruction": "layerbuild.parser.ast",
         "parse": "layerbuild.parser.core", "parse_file": "layerbuild.parser.core", "dump": "layerbuild.parser.dump"}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = ["Dockerfile", "Heredoc", "Instruction", "dump", "parse", "parse_file"]
