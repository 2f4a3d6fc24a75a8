"""Typed stages to a pure, printable DAG of build operations."""

from layerbuild.plan.model import Base, BaseImage, BuildPlan, PlannedStage, Scratch, StageRef, Step, StepKind
from layerbuild.plan.planner import host_platform_args, plan_build, step_kind

__all__ = [
    "Base",
    "BaseImage",
    "BuildPlan",
    "PlannedStage",
    "Scratch",
    "StageRef",
    "Step",
    "StepKind",
    "host_platform_args",
    "plan_build",
    "step_kind",
]
