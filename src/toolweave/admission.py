"""What ``App.submit`` checks before anything is stored.

Every front end (HTTP API, web form, command line, Telegram) submits through ``App.submit``, which
runs these checks in order and stores nothing (no run, no artifact) until all have passed:

1. ``check_storable``: values that cannot be stored and read back (lone surrogates, NUL, NaN and
   infinities, nesting deeper than ``input_max_depth``) — before and after ``prepare_inputs``,
   which reads JSON text;
2. ``check_urls``: URLs the server would fetch or post to and must not (the callback URL, and
   http(s) URLs in media, URL and JSON inputs): by their text (``netguard.check_literal``), then
   by what their host names resolve to;
3. ``resolve_artifacts``: every artifact reference in the inputs (at any depth, ``artifact:`` URIs
   and JSON text included) must be one the account holds; artifact values are written out in
   full, as the account knows them (its file name).

Each raises ``InputError`` naming every bad field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from toolweave.artifacts import ArtifactStore
from toolweave.inputs import FieldProblem, InputError, storable_problems, strings_in
from toolweave.model.definitions import JobDefinition, ParamType
from toolweave.model.records import ArtifactRef, artifact_mentions
from toolweave.netguard import (
    CALLBACK_SETTING,
    MEDIA_SETTING,
    ForbiddenURL,
    check_literal,
    check_url,
    is_ip,
)
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


class HostLookups(dict[tuple[str, str], str | None]):
    """Host names looked up by ``check_urls``, shared by the submits of one request (a batch):
    (host, setting) → why it is refused, or None when it is public."""


async def check_urls(
    job: JobDefinition, inputs: Mapping[str, Any], callback_url: str | None, settings: Settings,
    looked_up: HostLookups | None = None,
) -> None:
    """Refuse URLs the server would fetch or post to and must not: the callback URL, and http(s)
    URLs in media inputs, URL inputs and JSON inputs (at any depth). Every one by its text; then
    the hosts named by name are looked up (``_private_hosts``), so that a name that resolves to a
    private address is refused now rather than failing the run later. Each refusal of a private
    address names the setting that would allow it."""
    looked_up = HostLookups() if looked_up is None else looked_up
    if callback_url:
        problems = await _url_problems(
            [("callbackUrl", callback_url)], settings.callback_allow_private_urls, CALLBACK_SETTING, looked_up
        )
        if problems:
            raise InputError(problems, root="")
    urls: list[tuple[str, str]] = []
    for param in job.input_schema:
        if param.name in inputs and (param.type.is_media or param.accepts_url or param.type is ParamType.JSON):
            urls.extend(
                (where, text) for where, text in strings_in(inputs[param.name], param.name)
                if text[:8].lower().startswith(("http://", "https://"))
            )
    problems = await _url_problems(urls, settings.media_allow_private_urls, MEDIA_SETTING, looked_up)
    if problems:
        raise InputError(problems)


SUBMIT_LOOKUPS = 16
"""Host names looked up at submit, at most, per request (the rest are checked before their fetch)."""
SUBMIT_LOOKUP_SECONDS = 2.0
"""How long submit waits for those lookups, at most."""


async def _url_problems(
    urls: list[tuple[str, str]], allow_private: bool, setting: str, looked_up: HostLookups
) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    named: dict[str, list[tuple[str, str]]] = {}  # host name → (field, url)
    for where, url in urls:
        try:
            check_literal(url, allow_private=allow_private, setting=setting)
        except ForbiddenURL as exc:
            problems.append(FieldProblem(where, str(exc)))
            continue
        host = (urlsplit(url).hostname or "").rstrip(".")
        if not allow_private and not is_ip(host):
            named.setdefault(host, []).append((where, url))
    fresh = {host: group for host, group in named.items() if (host, setting) not in looked_up}
    if fresh:
        await _look_up(fresh, setting, looked_up)
    for host, group in named.items():
        refusal = looked_up.get((host, setting))
        if refusal is not None:
            problems.extend(FieldProblem(where, refusal) for where, _ in group)
    return sorted(problems, key=lambda p: p.field)


async def _look_up(named: dict[str, list[tuple[str, str]]], setting: str, looked_up: HostLookups) -> None:
    """Note in ``looked_up`` which host names resolve to a private address (``netguard.check_url``),
    for the first ``SUBMIT_LOOKUPS`` names, within ``SUBMIT_LOOKUP_SECONDS``. A name that does not
    resolve now, or not in time, passes and is not noted: the fetch checks it again (that check is
    the one that counts)."""

    async def lookup(host: str, url: str) -> None:
        try:
            await check_url(url, allow_private=False, setting=setting)
        except ForbiddenURL as exc:
            looked_up[(host, setting)] = str(exc)
        except OSError:  # UnresolvableHost among them
            return
        else:
            looked_up[(host, setting)] = None

    tasks = [asyncio.ensure_future(lookup(host, group[0][1])) for host, group in list(named.items())[:SUBMIT_LOOKUPS]]
    _done, pending = await asyncio.wait(tasks, timeout=SUBMIT_LOOKUP_SECONDS)
    for task in pending:
        task.cancel()


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
