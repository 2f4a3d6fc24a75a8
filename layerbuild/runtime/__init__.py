"""Overlay rootfs and Linux namespaces for RUN steps and `layerbuild run`.

The names below load their module on first use, so a build without RUN steps (which reads only
`limits`) does not import the sandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from layerbuild.lazy import lazy_getattr

if TYPE_CHECKING:
    from layerbuild.runtime.sandbox import Launched, launch, lower_dirs_for, run_step
    from layerbuild.runtime.spec import (
        BindMount,
        Mount,
        ProcessSpec,
        SandboxError,
        SecretMount,
        StepResult,
        TmpfsMount,
    )

_LAZY = {
    **dict.fromkeys(("Launched", "launch", "lower_dirs_for", "run_step"), "layerbuild.runtime.sandbox"),
    **dict.fromkeys(("BindMount", "Mount", "ProcessSpec", "SandboxError", "SecretMount", "StepResult",
                     "TmpfsMount"), "layerbuild.runtime.spec"),
}

__all__ = [
    "BindMount",
    "Launched",
    "Mount",
    "ProcessSpec",
    "SandboxError",
    "SecretMount",
    "StepResult",
    "TmpfsMount",
    "launch",
    "lower_dirs_for",
    "run_step",
]

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
