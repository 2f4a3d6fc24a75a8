"""layerbuild: a container image builder whose reason to exist is layered caching done well.

`import layerbuild` stays cheap (the CLI starts through it): the build machinery is loaded on
first use of `build`, `parse` or the result types.
"""

from __future__ import annotations

from layerbuild.errors import (
    BuildError,
    DigestMismatchError,
    DockerfileError,
    DockerfileSyntaxError,
    ExpansionError,
    LayerbuildError,
    RegistryAuthError,
    RegistryError,
    StepError,
    StoreError,
    UnsafeArchiveError,
    UsageError,
)
from layerbuild.lazy import lazy_getattr

TYPE_CHECKING = False  # typing's, without importing typing: the no-op build's start-up path

if TYPE_CHECKING:
    from layerbuild.api.build import build
    from layerbuild.parser import Dockerfile, Heredoc, Instruction, parse
    from layerbuild.solve.report import BuildEvent, BuildResult, ImageRef, StepReport, Summary

__version__ = "0.1.0"

_LAZY = {
    "build": "layerbuild.api.build",
    "parse": "layerbuild.parser",
    "Dockerfile": "layerbuild.parser",
    "Heredoc": "layerbuild.parser",
    "Instruction": "layerbuild.parser",
    "BuildEvent": "layerbuild.solve.report",
    "BuildResult": "layerbuild.solve.report",
    "ImageRef": "layerbuild.solve.report",
    "StepReport": "layerbuild.solve.report",
    "Summary": "layerbuild.solve.report",
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = [
    "BuildError",
    "BuildEvent",
    "BuildResult",
    "DigestMismatchError",
    "Dockerfile",
    "DockerfileError",
    "DockerfileSyntaxError",
    "ExpansionError",
    "Heredoc",
    "ImageRef",
    "Instruction",
    "LayerbuildError",
    "RegistryAuthError",
    "RegistryError",
    "StepError",
    "StepReport",
    "StoreError",
    "Summary",
    "UnsafeArchiveError",
    "UsageError",
    "__version__",
    "build",
    "parse",
]
