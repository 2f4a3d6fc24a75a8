"""The library's public entry points (build, parse), shared by the CLI and other programs."""

from __future__ import annotations

from layerbuild.lazy import lazy_getattr

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.api.build import build
    from layerbuild.parser import parse

# Loaded on first use: importing `layerbuild.api.build` for a no-op rebuild must not load the grammar.
__getattr__ = lazy_getattr(__name__, {"build": "layerbuild.api.build", "parse": "layerbuild.parser"}, globals())

__all__ = ["build", "parse"]
