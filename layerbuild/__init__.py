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

__version__ = "0.1.0"

__all__ = [
    "BuildError",
    "DigestMismatchError",
    "DockerfileError",
    "DockerfileSyntaxError",
    "ExpansionError",
    "LayerbuildError",
    "StoreError",
    "UnsafeArchiveError",
    "UsageError",
    "__version__",
]
