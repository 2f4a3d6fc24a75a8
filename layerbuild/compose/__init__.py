"""Compose projects: the Compose Specification's model (`load_project`) and builds of its services.

`compose → api`: the model is pure (files in, a `Project` out); builds go through `layerbuild.build()`.
"""

from __future__ import annotations

from layerbuild.compose.loader import Options, load_project
from layerbuild.compose.model import Project

__all__ = ["Options", "Project", "load_project"]
