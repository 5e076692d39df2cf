"""Records that travel between the engine, the services and the front ends."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toolweave.model.status import GenerationStatus

ARTIFACT_KIND = "artifact"


class ArtifactRef(BaseModel):
    """A media value passed by reference: content hash plus the metadata conditions may read.

    In run state (inputs, outputs) it is stored as a plain dict with ``kind: "artifact"``;
    ``ArtifactRef.from_value`` recognises such dicts.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: str = ARTIFACT_KIND
    sha256: str
    mime_type: str = Field(alias="mimeType")
    size: int
    width: int | None = None
    height: int | None = None
    filename: str | None = None

    @property
    def uri(self) -> str:
        return f"artifact:{self.sha256}"

    def as_value(self) -> dict[str, Any]:
        data = self.model_dump(by_alias=True, exclude_none=True)
        data["uri"] = self.uri
        return data

    @staticmethod
    def is_ref(value: Any) -> bool:
        return isinstance(value, dict) and value.get("kind") == ARTIFACT_KIND and "sha256" in value

    @classmethod
    def from_value(cls, value: Any) -> ArtifactRef | None:
        if cls.is_ref(value):
            return cls.model_validate(value)
        return None


class ServiceErrorInfo(BaseModel):
    """A normalised failure reported by a service."""

    message: str
    retryable: bool = False
    code: str | None = None
    node: str | None = None
    details: dict[str, Any] | None = None
    retry_after_seconds: float | None = None
    """The backend asked to be tried again no sooner than this (HTTP ``Retry-After``)."""


class RunUpdate(BaseModel):
    """One normalised update about a generation, whatever service it came from.

    ``outputs`` maps output names to values; media outputs are ``ArtifactRef.as_value()`` dicts.
    """

    status: GenerationStatus
    progress: float | None = None
    live_status: str | None = None
    outputs: dict[str, Any] | None = None
    cost_usd: Decimal | None = None
    error: ServiceErrorInfo | None = None
    platform_run_id: str | None = None
    raw: dict[str, Any] | None = None
