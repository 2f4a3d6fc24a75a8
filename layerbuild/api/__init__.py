"""The library's public entry points (build, parse), shared by the CLI and other programs."""

from layerbuild.api.build import build
from layerbuild.parser import parse

__all__ = ["build", "parse"]
