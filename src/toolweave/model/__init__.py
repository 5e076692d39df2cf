"""Pydantic models of definitions and records, and the status enums. No I/O."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolweave.model.definitions import (
        CostingModel,
        ErrorHandling,
        ErrorStrategy,
        InputMapping,
        InputParam,
        JobDefinition,
        JobOutput,
        MapSpec,
        Money,
        OutputParam,
        ParamType,
        PlatformHints,
        RateSource,
        Step,
        ToolDefinition,
        ValueSource,
        Visibility,
        VisibleIf,
    )
    from toolweave.model.records import ArtifactRef, RunUpdate, ServiceErrorInfo
    from toolweave.model.status import (
        GenerationStatus,
        NotificationStatus,
        RunStatus,
        StepStatus,
        TaskKind,
    )

_HOMES = {
    **dict.fromkeys(("ArtifactRef", "RunUpdate", "ServiceErrorInfo"), "records"),
    **dict.fromkeys(("GenerationStatus", "NotificationStatus", "RunStatus", "StepStatus", "TaskKind"), "status"),
}


def __getattr__(name: str) -> Any:
    """The names below are loaded on first use: importing ``toolweave.model.status`` (an enum
    module) must not load pydantic and every definition model (a CLI's ``--help`` would pay)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"toolweave.model.{_HOMES.get(name, 'definitions')}"), name)
    globals()[name] = value
    return value


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
    "MapSpec",
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
    "ValueSource",
    "Visibility",
    "VisibleIf",
]
