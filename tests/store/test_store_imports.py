"""The dependency rule for the store: it imports only errors, digest, lazy (exports), itself, stdlib, zstandard and xxhash."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import layerbuild.store

ALLOWED_THIRD_PARTY = {"zstandard", "xxhash"}
ALLOWED_OURS = {"layerbuild.errors", "layerbuild.digest", "layerbuild.lazy"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_store_imports_only_what_it_may() -> None:
    package_dir = Path(layerbuild.store.__file__).parent
    for path in sorted(package_dir.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if name.startswith("layerbuild."):
                assert name.startswith("layerbuild.store") or name in ALLOWED_OURS, (path.name, name)
            else:
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (path.name, name)


def test_modules_are_small_and_documented() -> None:
    for path in Path(layerbuild.store.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) < 400, path.name
        assert ast.get_docstring(ast.parse(text)), path.name
