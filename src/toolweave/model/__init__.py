"""Pydantic models of definitions and records, and the status enums. No I/O."""

from toolweave.model.definitions import (
    CostingModel,
    ErrorHandling,
    ErrorStrategy,
    InputMapping,
    InputParam,
    JobDefinition,
    JobOutput,
    Money,
    OutputParam,
    ParamType,
    PlatformHints,
    RateSource,
    Step,
    ToolDefinition,
    Visibility,
)
from toolweave.model.records import ArtifactRef, RunUpdate, ServiceErrorInfo
from toolweave.model.status import (
    GenerationStatus,
    NotificationStatus,
    RunStatus,
    StepStatus,
    TaskKind,
)

__all__ = [
    "ArtifactRef",
    "CostingModel",
    "ErrorHandling",
    "ErrorStrategy",
    "GenerationStatus",
    "InputMapping",
    "InputParam",
    "JobDefinition",
    "JobOutput",
    "Money",
    "NotificationStatus",
    "OutputParam",
    "ParamType",
    "PlatformHints",
    "RateSource",
    "RunStatus",
    "RunUpdate",
    "ServiceErrorInfo",
    "Step",
    "StepStatus",
    "TaskKind",
    "ToolDefinition",
    "Visibility",
]
