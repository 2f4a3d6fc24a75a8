"""Typed stages to a pure, printable DAG of build operations."""

from layerbuild.plan.model import Base, BaseImage, BuildPlan, PlannedStage, Scratch, StageRef, Step, StepKind
from layerbuild.plan.planner import plan_build, step_kind

__all__ = [
    "Base",
    "BaseImage",
    "BuildPlan",
    "PlannedStage",
    "Scratch",
    "StageRef",
    "Step",
    "StepKind",
    "plan_build",
    "step_kind",
]
