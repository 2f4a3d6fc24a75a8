"""layerbuild: a container image builder whose reason to exist is layered caching done well."""

from layerbuild.errors import (
    BuildError,
    DigestMismatchError,
    DockerfileError,
    DockerfileSyntaxError,
    ExpansionError,
    LayerbuildError,
    StoreError,
    UnsafeArchiveError,
    UsageError,
)
from layerbuild.parser import Dockerfile, Heredoc, Instruction, parse

__version__ = "0.1.0"

__all__ = [
    "BuildError",
    "DigestMismatchError",
    "Dockerfile",
    "DockerfileError",
    "DockerfileSyntaxError",
    "ExpansionError",
    "Heredoc",
    "Instruction",
    "LayerbuildError",
    "StoreError",
    "UnsafeArchiveError",
    "UsageError",
    "__version__",
    "parse",
]
