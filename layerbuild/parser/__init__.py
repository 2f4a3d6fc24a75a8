"""Dockerfile text to a typed AST, with BuildKit's splitting rules (Lark grammar + line pre-pass)."""

from layerbuild.parser.ast import Dockerfile, Heredoc, Instruction
from layerbuild.parser.core import parse, parse_file
from layerbuild.parser.dump import dump

__all__ = ["Dockerfile", "Heredoc", "Instruction", "dump", "parse", "parse_file"]
