"""Which artifact references grant an account the artifact: those among a step's outputs that a
tool made (``made_media``, recorded with the generation or a cache hit), and every reference in a
value (``_artifact_values``: a run's inputs, linked to the run at submission once admission found
them held).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.model.definitions import JobOutput, OutputParam
from toolweave.model.records import ArtifactRef


def made_media(
    outputs: Mapping[str, Any] | None, schema: list[OutputParam] | list[JobOutput], *, undeclared: bool = True
) -> list[dict[str, Any]]:
    """The artifact references among outputs that grant their run's account the artifact: those of
    the media outputs ``schema`` declares and (``undeclared``) of the outputs it does not declare
    (a ComfyUI workflow's images without an outputSchema): adapters store the media they make.
    A reference inside a declared non-media output grants nothing: a JSON answer of an API the
    user steers (a language model) can name another account's artifact by its hash alone, which
    must reach it no more than a hash in a run's inputs does (``admission``). A run's final outputs
    grant nothing (``run_end.finish_run``)."""
    if not outputs:
        return []
    types = {p.name: p.type for p in schema}
    found: list[dict[str, Any]] = []
    for name, value in outputs.items():
        kind = types.get(name)
        if kind.is_media if kind is not None else undeclared:
            found.extend(_artifact_values(value))
    return found


def _artifact_values(values: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(v: Any) -> None:
        if ArtifactRef.is_ref(v):
            found.append(v)
        elif isinstance(v, dict):
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(values)
    return found
