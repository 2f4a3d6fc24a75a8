"""Overlay rootfs and Linux namespaces for RUN steps and `layerbuild run`."""

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
