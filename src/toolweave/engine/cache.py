"""Cached steps: when a finished step's outputs may stand for a new attempt's, and under which key.

A step is cached when it opts in (``cache`` on the step, else on its tool; ``cache: false`` on a step
opts out of its tool's). An attempt's key is the SHA-256 of the tool definition's snapshot hash and
its inputs as the tool receives them — an artifact by its content hash, so the same bytes under
another name hit — in canonical JSON. An attempt never uses the cache when one of its seed inputs
was drawn at random (by the planner for an unmapped seed, or at submission for a seed input left
empty), so "a new seed every time" stays true. Keys are scoped to the account: a hit never hands one
account another account's outputs (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Any

from toolweave.model.definitions import Step, ToolDefinition
from toolweave.model.records import ArtifactRef


def lifetime(step: Step, tool: ToolDefinition) -> float | None:
    """The seconds a result of this step on ``tool`` may be reused, or None (not cached)."""
    policy = step.cache if step.cache is not None else tool.cache
    if policy is None or not policy.enabled:
        return None
    return policy.lifetime


def _canonical(value: Any) -> Any:
    if ArtifactRef.is_ref(value):
        return {"artifact": value["sha256"]}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def key(tool_sha: str, inputs: dict[str, Any]) -> str:
    """The cache key of an attempt: the tool's definition hash and its inputs (artifacts by content)."""
    text = json.dumps({"tool": tool_sha, "inputs": _canonical(inputs)}, sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def reads_random(step: Step, random_inputs: Collection[str]) -> bool:
    """Whether the step reads a job input whose value was drawn at random when the run was submitted."""
    if not random_inputs:
        return False
    from toolweave.engine.replay import job_inputs_read

    read = job_inputs_read(step)
    return read is None or bool(read & set(random_inputs))
