"""What ``App.submit`` checks before anything is stored.

Every front end (HTTP API, web form, command line, Telegram) submits through ``App.submit``, which
runs these checks in order and stores nothing (no run, no artifact) until all have passed:

1. ``check_storable``: values that cannot be stored and read back (lone surrogates, NUL, NaN and
   infinities, nesting deeper than ``input_max_depth``) — before and after ``prepare_inputs``,
   which reads JSON text;
2. ``check_urls``: URLs the server would fetch or post to and must not, by their text
   (``netguard.check_literal``): the callback URL, and http(s) URLs in media, URL and JSON inputs;
3. ``resolve_artifacts``: every artifact reference in the inputs (at any depth, ``artifact:`` URIs
   and JSON text included) must be one the account holds; artifact values are written out in
   full, as the account knows them (its file name).

Each raises ``InputError`` naming every bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toolweave.artifacts import ArtifactStore
from toolweave.inputs import FieldProblem, InputError, storable_problems, strings_in
from toolweave.model.definitions import JobDefinition, ParamType
from toolweave.model.records import ArtifactRef, artifact_mentions
from toolweave.netguard import ForbiddenURL, check_literal
from toolweave.settings import Settings
from toolweave.store import accounts as accounts_q
from toolweave.store.db import Store


def check_storable(
    inputs: Mapping[str, Any], max_depth: int, *, callback_url: str | None = None, idempotency_key: str | None = None
) -> None:
    problems = storable_problems(inputs, max_depth=max_depth)
    if problems:
        raise InputError(problems)
    request = {k: v for k, v in (("callbackUrl", callback_url), ("idempotencyKey", idempotency_key)) if v is not None}
    problems = storable_problems(request, max_depth=max_depth)
    if problems:
        raise InputError(problems, root="")


def check_urls(job: JobDefinition, inputs: Mapping[str, Any], callback_url: str | None, settings: Settings) -> None:
    """Refuse, by their text alone, URLs the server would fetch or post to and must not: the
    callback URL, and http(s) URLs in media inputs, URL inputs and JSON inputs (at any depth)."""
    if callback_url:
        try:
            check_literal(callback_url, allow_private=settings.callback_allow_private_urls)
        except ForbiddenURL as exc:
            raise InputError([FieldProblem("callbackUrl", str(exc))], root="") from None
    problems: list[FieldProblem] = []
    for param in job.input_schema:
        if param.name in inputs and (param.type.is_media or param.accepts_url or param.type is ParamType.JSON):
            for where, text in strings_in(inputs[param.name], param.name):
                if text[:8].lower().startswith(("http://", "https://")):
                    try:
                        check_literal(text, allow_private=settings.media_allow_private_urls)
                    except ForbiddenURL as exc:
                        problems.append(FieldProblem(where, str(exc)))
    if problems:
        raise InputError(problems)


async def resolve_artifacts(
    inputs: dict[str, Any], account_id: str, store: Store, artifacts: ArtifactStore
) -> dict[str, Any]:
    """Refuse every artifact reference that the account does not hold; return the inputs with each
    artifact value written out in full (the short form ``{"kind": "artifact", "sha256": ...}`` is
    accepted)."""
    mentions = list(artifact_mentions(inputs, json_text=True))
    if not mentions:
        return inputs
    shas = [m.sha256 for m in mentions if m.sha256 is not None]
    held = await store.read(accounts_q.artifacts_held, account_id, shas) if shas else {}
    problems: list[FieldProblem] = []
    for m in mentions:
        if m.sha256 is None:
            problems.append(FieldProblem(m.path, "is not an artifact reference (its sha256 must be 64 hex digits)"))
        elif m.sha256 not in held or not artifacts.exists(m.sha256):
            problems.append(FieldProblem(m.path, f"artifact {m.sha256[:12]}… is not one of yours"))
    if problems:
        raise InputError(problems)
    refs = {sha: accounts_q.artifact_ref(row).as_value() for sha, row in held.items()}
    resolved: dict[str, Any] = _with_full_refs(inputs, refs)
    return resolved


def _with_full_refs(value: Any, refs: Mapping[str, dict[str, Any]]) -> Any:
    """``value`` with every artifact value replaced by ``refs[its sha256]``."""
    if isinstance(value, dict):
        if ArtifactRef.is_ref(value) and value.get("sha256") in refs:
            return dict(refs[value["sha256"]])
        return {k: _with_full_refs(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_full_refs(v, refs) for v in value]
    return value
