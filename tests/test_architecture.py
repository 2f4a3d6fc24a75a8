"""The dependency rule, the public API and the package list are checked here, not remembered."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import layerbuild
from tests.conftest import REPO

PKG = REPO / "layerbuild"

# Who may import whom (DESIGN.md): imports point down only. Everyone may use errors and digest.
DIRECT = {
    "cli": {"api"},
    "api": {"worker"},
    "worker": {"solve", "runtime", "registry"},
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


def allowed(pkg: str) -> set[str]:
    seen: set[str] = set()
    todo = [pkg]
    while todo:
        for dep in DIRECT[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen | {pkg, "errors", "digest", "platforms", "reference", "lazy", "grammar"}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "layerbuild" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_dependency_rule() -> None:
    problems = []
    for pkg in DIRECT:
        for path in sorted((PKG / pkg).rglob("*.py")):
            bad = imported_packages(path) - allowed(pkg)
            if bad:
                problems.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)


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
        "ExpansionError", "LayerbuildError", "StoreError", "UnsafeArchiveError", "UsageError",
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
            "heavy = [m for m in ('lark', 'zstandard', 'sqlite3', 'rich', 'layerbuild.worker', 'layerbuild.store') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at start-up: {out}"


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
