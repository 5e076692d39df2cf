"""Records that travel between the engine, the services and the front ends."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from toolweave.model.status import GenerationStatus

ARTIFACT_KIND = "artifact"
ARTIFACT_URI_PREFIX = "artifact:"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


@dataclass(frozen=True)
class ArtifactMention:
    """A reference to an artifact somewhere inside a value: an artifact value
    (``{"kind": "artifact", "sha256": ...}``, the short form included) or an ``artifact:<sha256>``
    URI. ``sha256`` is None for an artifact value whose ``sha256`` is not a valid artifact id."""

    path: str
    sha256: str | None
    uri: bool = False


def artifact_mentions(value: Any, path: str = "", *, json_text: bool = False) -> Iterator[ArtifactMention]:
    """Every artifact reference in ``value`` at any depth, with its path (``images[0].src``).

    With ``json_text``, text that holds a JSON object or list mentioning an artifact is read too
    (a tool taking JSON parses such text before use)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            if item.get("kind") == ARTIFACT_KIND and "sha256" in item:
                sha = item["sha256"]
                yield ArtifactMention(where, sha if isinstance(sha, str) and _SHA256.match(sha) else None)
                continue
            stack.extend((f"{where}.{key}" if where else str(key), sub) for key, sub in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            if item.startswith(ARTIFACT_URI_PREFIX) and _SHA256.match(item[len(ARTIFACT_URI_PREFIX):]):
                yield ArtifactMention(where, item[len(ARTIFACT_URI_PREFIX):], uri=True)
            elif json_text and ARTIFACT_KIND in item and item.lstrip()[:1] in ("{", "["):
                try:
                    stack.append((where, json.loads(item)))
                except (ValueError, RecursionError):
                    pass


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
