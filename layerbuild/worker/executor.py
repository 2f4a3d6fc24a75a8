"""The interface RUN steps plug into: an executor runs a command on a rootfs and returns its changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from layerbuild.errors import BuildError
from layerbuild.instructions.mounts import Mount


@dataclass(frozen=True)
class RunSpec:
    """Everything a RUN step needs: the lower layers (bottom first), the command and its setting."""

    lower: tuple[Path, ...]
    argv: tuple[str, ...]
    env: tuple[str, ...]
    workdir: str
    user: str
    network: str = "default"
    mounts: tuple[Mount, ...] = ()
    secrets: Mapping[str, Path] = field(default_factory=dict)
    stdin: bytes | None = None


class Executor(Protocol):
    """Runs one RUN step. `run` returns the directory of changes (an overlay upper dir) to turn into a
    layer, and raises BuildError with the exit code and the last lines of output when it fails."""

    def run(self, spec: RunSpec, workdir: Path) -> Path: ...


class NoExecutor:
    """Stands in until a sandbox is available: every RUN step fails with a clear message."""

    def run(self, spec: RunSpec, workdir: Path) -> Path:
        raise BuildError(
            "RUN steps need the sandbox executor, which this build of layerbuild does not have",
            hint="build Dockerfiles without RUN, or use a layerbuild with the sandbox",
        )
