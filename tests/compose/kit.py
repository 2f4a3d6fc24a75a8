"""Helpers for the compose tests: write a project's files and load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerbuild.compose import Options, Project, load_project


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def load(directory: Path, *files: str, env: dict[str, str] | None = None, **kw: Any) -> Project:
    return load_project(Options(files=files, cwd=directory, environ=env or {}, **kw), warn=lambda m: None)
