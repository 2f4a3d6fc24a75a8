"""Typed Dockerfile commands from the parser's AST: validation, flags, variable expansion and ARG/ENV scoping."""
