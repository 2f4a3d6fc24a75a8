"""Dockerfile text to a typed AST, with BuildKit's splitting rules (Lark grammar + line pre-pass)."""
