"""Helpers for the instruction tests: Dockerfile text to typed stages."""

from __future__ import annotations

import textwrap

from layerbuild.instructions import Stage, parse_stages
from layerbuild.instructions.commands import Arg
from layerbuild.parser import Dockerfile, parse


def dockerfile(text: str) -> Dockerfile:
    return parse(textwrap.dedent(text).lstrip("\n"))


def stages(text: str) -> tuple[Dockerfile, tuple[Arg, ...], tuple[Stage, ...]]:
    df = dockerfile(text)
    meta, parsed = parse_stages(df)
    return df, meta, parsed
