"""The dependency rule, the public API and the package list are checked here, not remembered."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

import layerbuild
from tests.conftest import REPO

PKG = REPO / "layerbuild"

# Who may import whom (DESIGN.md): imports point down only. Everyone may use the shared modules.
DIRECT = {
    "cli": {"api", "compose", "bench", "remote"},
    "remote": {"api"},
    "compose": {"api"},
    "bench": {"api"},
    "api": {"worker"},
    "worker": {"solve", "runtime", "registry", "context"},
    "context": {"store"},
    "solve": {"plan", "store"},
    "plan": {"instructions"},
    "instructions": {"parser"},
    "parser": set(),
    "runtime": {"image", "layer", "store"},
    "registry": {"image", "store"},
    "image": {"layer", "store"},
    "layer": {"store"},
    "store": set(),
}
# The modules at the top of the package. The leaves import nothing of ours; `reference` only the
# error tree. `__init__` is the library's facade: errors and lazy eagerly, and on first use the
# modules behind `build`, `parse` and the result types. `__main__` only starts the CLI.
TOP_LEVEL = {
    "errors": set(),
    "digest": set(),
    "platforms": set(),
    "lazy": set(),
    "reference": {"errors"},
    "__init__": {"errors", "lazy", "api", "parser", "solve"},
    "__main__": {"cli"},
}
SHARED = {"errors", "digest", "platforms", "lazy", "reference", "grammar"}
# Names a module may take from the `layerbuild` facade itself; anything else comes from its own module
# (the facade's other names load api, parser or solve, which would hide an upward import).
FROM_FACADE = {"__version__"}


def allowed(unit: str) -> set[str]:
    """The units (packages, top-level modules) that code in `unit` may import."""
    if unit in TOP_LEVEL:
        return TOP_LEVEL[unit] | {unit}
    seen: set[str] = set()
    todo = [unit]
    while todo:
        for dep in DIRECT[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen | {unit} | SHARED


def unit_of(rel: str) -> str:
    """`store/fsck.py` → `store`; `errors.py` → `errors`; `__init__.py` → `__init__`."""
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _target(dotted: str) -> str | None:
    """The unit a dotted module name of ours belongs to (`layerbuild` itself is `__init__`)."""
    parts = dotted.split(".")
    if parts[0] != "layerbuild":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    return (PKG / name).is_dir() or (PKG / f"{name}.py").is_file() or name == "grammar"


def _is_lazy_map(node: ast.AST) -> bool:
    """`_LAZY = {name: "layerbuild.module", ...}`: the exports a package loads on first use."""
    return (
        isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Dict)
        and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
    )


def imports_of(source: str) -> tuple[list[tuple[int, str]], list[str]]:
    """The units of ours that `source` imports, with line numbers, and the forms it may not use.

    Counted: `import layerbuild.x`, `from layerbuild.x import y`, `from layerbuild import x` (x a package
    or module), names taken from the facade, and the module strings of a lazy-export map (`_LAZY`).
    Relative imports are refused outright: the package does not use them, and an absolute name is
    what this check (and a reader) can follow.
    """
    found: list[tuple[int, str]] = []
    bad: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, t) for a in node.names if (t := _target(a.name)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                bad.append(f"line {node.lineno}: relative import (from {'.' * node.level}{node.module or ''})")
            elif node.module == "layerbuild":
                for alias in node.names:
                    if _is_module(alias.name):
                        found.append((node.lineno, alias.name))
                    elif alias.name not in FROM_FACADE:
                        bad.append(f"line {node.lineno}: {alias.name} taken from the layerbuild facade")
            elif node.module and (t := _target(node.module)):
                found.append((node.lineno, t))
        elif _is_lazy_map(node):
            assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
            found.extend(
                (value.lineno, t)
                for value in node.value.values
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and (t := _target(value.value))
            )
    return found, bad


def rule_problems(rel: str, source: str) -> list[str]:
    """Every way the module at `rel` (relative to the package) breaks the dependency rule."""
    unit = unit_of(rel)
    found, bad = imports_of(source)
    may = allowed(unit)
    out = [f"{rel}: {b}" for b in bad]
    out += [f"{rel}: line {line}: {unit} may not import {t}" for line, t in found if t not in may]
    return out


def test_dependency_rule() -> None:
    problems = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        problems += rule_problems(rel, path.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_every_package_and_top_level_module_has_a_rule() -> None:
    packages = {p.parent.name for p in PKG.glob("*/__init__.py")}
    modules = {p.stem for p in PKG.glob("*.py")}
    assert packages == set(DIRECT)
    assert modules == set(TOP_LEVEL)
    assert SHARED - {"grammar"} <= modules


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        ("store/x.py", "from layerbuild import image\n", "store may not import image"),
        ("store/x.py", "from layerbuild import errors, layer\n", "store may not import layer"),
        ("store/x.py", "import layerbuild.image.config\n", "store may not import image"),
        ("store/x.py", "from layerbuild.image.config import ImageConfig\n", "store may not import image"),
        ("store/x.py", "if TYPE_CHECKING:\n    from layerbuild.image import X\n", "store may not import image"),
        ("store/x.py", "from . import caches\n", "relative import (from .)"),
        ("store/x.py", "from .caches import clear\n", "relative import (from .caches)"),
        ("store/x.py", "from ..image import config\n", "relative import (from ..image)"),
        ("store/__init__.py", '_LAZY = {"X": "layerbuild.image.config"}\n', "store may not import image"),
        ("worker/x.py", "from layerbuild import parse\n", "parse taken from the layerbuild facade"),
        ("worker/x.py", "import layerbuild\n", "worker may not import __init__"),
        ("errors.py", "from layerbuild.digest import xxh3\n", "errors may not import digest"),
        ("digest.py", "from layerbuild import errors\n", "digest may not import errors"),
        ("platforms.py", "import layerbuild.store\n", "platforms may not import store"),
        ("lazy.py", "from layerbuild.errors import LayerbuildError\n", "lazy may not import errors"),
        ("reference.py", "from layerbuild.digest import split_digest\n", "reference may not import digest"),
        ("__init__.py", "from layerbuild.worker.build import Build\n", "__init__ may not import worker"),
        ("__init__.py", '_LAZY = {"build": "layerbuild.worker.build"}\n', "__init__ may not import worker"),
        ("__main__.py", "from layerbuild.api import build\n", "__main__ may not import api"),
    ],
)
def test_the_rule_checker_catches(rel: str, source: str, expected: str) -> None:
    problems = rule_problems(rel, source)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("rel", "source"),
    [
        ("worker/x.py", "from layerbuild import __version__\n"),
        ("worker/x.py", "from layerbuild import store, errors\nfrom layerbuild.reference import split_tag\n"),
        ("image/x.py", "from layerbuild.store import Store\nimport layerbuild.layer.ingest\n"),
        ("reference.py", "from layerbuild.errors import UsageError\n"),
        ("__init__.py", '_LAZY = {"parse": "layerbuild.parser", "build": "layerbuild.api.build"}\n'),
        ("__main__.py", "from layerbuild.cli.main import entry\n"),
        ("store/x.py", "import os\nfrom pathlib import Path\nfrom layerbuild.store.layout import Layout\n"),
    ],
)
def test_the_rule_checker_lets_allowed_imports_pass(rel: str, source: str) -> None:
    assert rule_problems(rel, source) == []


def test_only_cli_imports_rich() -> None:
    for path in PKG.rglob("*.py"):
        if "cli" in path.relative_to(PKG).parts:
            continue
        text = path.read_text(encoding="utf-8")
        assert "import rich" not in text and "from rich" not in text, path


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"layerbuild"} | {
        "layerbuild." + p.parent.relative_to(PKG).as_posix().replace("/", ".")
        for p in PKG.rglob("__init__.py") if p.parent != PKG
    } | {"layerbuild.grammar"}
    assert listed == found


def test_grammar_ships_as_package_data() -> None:
    from importlib.resources import files

    assert "KEYWORD" in files("layerbuild.grammar").joinpath("dockerfile.lark").read_text()


def test_public_api_is_pinned() -> None:
    assert sorted(layerbuild.__all__) == sorted([
        "BuildError", "DigestMismatchError", "DockerfileError", "DockerfileSyntaxError",
        "ExpansionError", "LayerbuildError", "RegistryAuthError", "RegistryError", "StoreError", "UnsafeArchiveError", "UsageError",
        "__version__", "parse", "Dockerfile", "Instruction", "Heredoc", "build", "BuildResult",
        "BuildEvent", "ImageRef", "StepReport", "Summary", "StepError",
    ])
    for name in layerbuild.__all__:
        assert hasattr(layerbuild, name)


def test_every_error_is_a_layerbuild_error() -> None:
    import layerbuild.errors as errors

    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, errors.LayerbuildError), name


def test_cli_start_up_imports_stay_light() -> None:
    """`layerbuild --help` must not load the build machinery (start-up time of every verb)."""
    import subprocess
    import sys

    code = ("import sys; from layerbuild.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('lark', 'zstandard', 'sqlite3', 'rich', 'httpx', 'layerbuild.worker', "
            "'layerbuild.store', 'layerbuild.registry') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at start-up: {out}"


def test_a_build_loads_only_the_machinery_its_steps_use(tmp_path: Path) -> None:
    """A build of COPY steps into the store does not load the sandbox (only RUN steps use it), the
    archive writers (only --output uses them), the ssh agent relay (only --ssh uses it), the store's
    pruning (only `prune` and `df`) or difflib (only a did-you-mean hint)."""
    import subprocess
    import sys

    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (tmp_path / "ctx" / "a").write_text("a\n")
    code = ("import sys; from layerbuild.cli.main import main; "
            f"assert main(['--root', {str(tmp_path / 'store')!r}, 'build', '-q', {str(tmp_path / 'ctx')!r}]) == 0; "
            "heavy = [m for m in ('layerbuild.runtime.sandbox', 'layerbuild.runtime.spec', 'layerbuild.image.archive', "
            "'layerbuild.image.ocilayout', 'layerbuild.image.dockerarchive', 'layerbuild.worker.sshagent', 'socket', "
            "'layerbuild.store.maintenance', 'difflib') "
            "if m in sys.modules]; print(','.join(heavy), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "", f"loaded by a COPY-only build: {done.stderr}"


def _oci_json_keys(path: Path) -> set[str]:
    """Keys of dict literals in `path` that only an OCI manifest or config has."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            found |= keys & {"schemaVersion", "diff_ids"}
    return found


def test_only_the_image_package_writes_oci_manifests_and_configs() -> None:
    offenders = [
        f"{path.relative_to(REPO)}: {sorted(keys)}"
        for path in sorted(PKG.rglob("*.py"))
        if "image" not in path.relative_to(PKG).parts[:1] and (keys := _oci_json_keys(path))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_oci_json_check_sees_a_raw_manifest(tmp_path: Path) -> None:
    src = tmp_path / "raw.py"
    src.write_text('manifest = {"schemaVersion": 2, "layers": []}\n')
    assert _oci_json_keys(src) == {"schemaVersion"}


def test_a_pull_does_not_load_the_layer_writers() -> None:
    """What a pull reaches for (the image protocol, the store's door, the registry's images) loads
    the layer reader and the compression sniffer only: not the writers and the extractor, which
    the `layerbuild.layer` package names lazily."""
    import subprocess
    import sys

    code = ("import sys; import layerbuild.image.protocol, layerbuild.image.storeimage, "
            "layerbuild.registry.images, layerbuild.registry.pull; "
            "heavy = [m for m in ('layerbuild.layer.apply', 'layerbuild.layer.writer', 'layerbuild.layer.mapped') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported by a pull: {out}"


_FAST_PATH_HEAVY = ("lark", "zstandard", "layerbuild.parser.ast", "layerbuild.parser.core", "layerbuild.worker.build",
                    "layerbuild.solve.solver", "layerbuild.context.tree", "layerbuild.store.db", "tempfile",
                    "secrets", "typing", "layerbuild.cli.remote")


def test_a_no_op_or_touch_build_answered_by_its_record_stays_light(tmp_path: Path) -> None:
    """A rebuild answered by the last build's record (nothing changed, or only a file's times) loads
    neither the build machinery nor the parser's AST, the store's database layer or tempfile (argparse
    itself loads shutil), nor `typing` (its modules take TYPE_CHECKING as a constant of their own)."""
    import os
    import subprocess
    import sys
    import time

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("a")
    time.sleep(0.06)  # older than the fast path's racy margin: the stats vouch for the files
    code = ("import sys, io, contextlib; from layerbuild.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['--root', {str(tmp_path / 'root')!r}, 'build', '-q', '-t', 't', {str(ctx)!r}]) == 0\n"
            f"heavy = [m for m in {_FAST_PATH_HEAVY!r} if m in sys.modules]; print(','.join(heavy))")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert "layerbuild.worker.build" in first  # the first build takes the full path: the check sees it
    for change in (None, "touch"):
        if change == "touch":
            st = (ctx / "a").stat()
            os.utime(ctx / "a", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        assert out == "", f"imported by a rebuild answered from its record ({change or 'no-op'}): {out}"
