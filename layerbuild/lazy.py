"""Lazy package exports (PEP 562): names load their module on first use (imports nothing of ours).

Packages on the CLI's start-up path export their API this way, so `layerbuild --help` or a no-op
build does not pay for SQLite, zstd, Lark or the build machinery it does not touch.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `exports` maps each name to the module defining it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        import importlib

        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # cached: later lookups are ordinary attribute reads
        return value

    return __getattr__
