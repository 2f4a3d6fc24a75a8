"""Dockerfile text to a typed AST, with BuildKit's splitting rules (Lark grammar + line pre-pass)."""

from layerbuild.parse.ast import Dockerfile, Heredoc, Instruction
from layerbuild.parse.dump import dump
from layerbuild.parse.parser import parse, parse_file

__all__ = ["Dockerfile", "Heredoc", "Instruction", "dump", "parse", "parse_file"]
