"""Runs (submit, list, show, cancel, retry), their event stream, and artifacts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import mimetypes
import threading
import zipfile
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.formparsers import MultiPartException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from toolweave.accounting import InsufficientCredits, Refused
from toolweave.api import submit as submit_mod
from toolweave.api.auth import Caller, changing, require_caller, tw
from toolweave.api.problems import ApiProblem, FieldError
from toolweave.api.schemas import (
    BatchResult,
    ItemPage,
    RetryRunRequest,
    RunDetail,
    RunPage,
    StoredText,
    SubmitBatchRequest,
    SubmitRunRequest,
)
from toolweave.api.sse import RETRY_AFTER_SECONDS, StreamSlots, stream
from toolweave.app import App
from toolweave.model.status import RunStatus

router = APIRouter(prefix="/api/v1")
log = logging.getLogger("toolweave.api")

RunId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_-]+$", description="The run's id")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="The artifact's SHA-256 (hex)")]
StatusName = Literal[
    "queued", "running", "waiting_input", "completed", "partially_completed", "failed", "cancelled", "pending",
]
"""``pending`` is the former name of ``queued`` and still means it."""
ItemStatusName = Literal["pending", "running", "waiting_retry", "succeeded", "failed", "cancelled"]

_SSE_EVENT: dict[str, Any] = {
    "description": "One event of the stream (OpenAPI before 3.2: the schema describes each event)",
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The event id: send it back as Last-Event-ID"},
        "event": {"type": "string", "description": "The event type: run.created, step.started, …"},
        "data": {"type": "string", "description": "The event as JSON: {id, runId, type, stepId, data, at}"},
    },
    "required": ["id", "event", "data"],
}
_SUBMIT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SubmitRunRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "toolId": {"type": "string", "minLength": 1, "maxLength": 200},
                        "jobId": {"type": "string", "minLength": 1, "maxLength": 200},
                        "inputs": {"type": "string", "description": "a JSON object of input values"},
                        "callbackUrl": {"type": "string", "maxLength": 2000},
                        "priority": {"type": "integer", "minimum": -100, "maximum": 100},
                        "costCeiling": {"type": "string", "description": "the most the run may cost (decimal)"},
                        "version": {"type": "string", "minLength": 1, "maxLength": 64},
                    },
                    "oneOf": [{"required": ["toolId"]}, {"required": ["jobId"]}],
                    "additionalProperties": {
                        "description": "an input: a text value, or a file for a media input",
                        "oneOf": [{"type": "string"}, {"type": "string", "format": "binary"}],
                    },
                }
            },
        },
    }
}


@router.post(
    "/runs",
    status_code=201,
    response_model=RunDetail,
    summary="Submit a run of a tool or a job",
    tags=["runs"],
    openapi_extra=_SUBMIT_BODY,
    responses={
        200: {"description": "A run submitted before with the same Idempotency-Key", "model": RunDetail},
        402: {"description": "The account's available credits do not cover the run's estimate (nothing created)"},
        429: {"description": "The account is at a limit (runs in flight, runs per minute); see Retry-After"},
        413: {"description": "An uploaded file is too large"},
        415: {"description": "The body is neither JSON nor multipart/form-data"},
    },
)
async def submit_run(
    request: Request,
    response: Response,
    caller: Caller = Depends(require_caller),
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", max_length=200, description="Repeat a submit safely: the same key returns the same run"),
    ] = None,
) -> dict[str, Any]:
    """Submit a run. JSON: ``{"toolId"|"jobId": ..., "version": ..., "inputs": {...}, "callbackUrl": ..., "priority": 0}``
    (``version`` picks a registered version; the latest runs without it).

    Multipart: the same fields, plus one field per input (text), or a file for a media input
    (``image=@photo.png``); ``inputs`` may hold a JSON object of further values. Media inputs in
    JSON take an http(s) URL, a ``data:`` URI or an artifact value returned by an earlier run.
    """
    app = tw(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data" or content_type == "application/x-www-form-urlencoded":
        try:
            form = await request.form(max_files=32, max_fields=200)
        except (MultiPartException, ValueError, KeyError, AssertionError) as exc:
            raise ApiProblem(400, f"the form cannot be read: {exc}", kind="malformed-body") from None
        fields: dict[str, Any] = {}
        for key in ("toolId", "jobId", "callbackUrl", "version", "costCeiling"):
            value = form.get(key)
            if isinstance(value, str) and value != "":
                fields[key] = value
        priority = form.get("priority")
        if isinstance(priority, str) and priority.strip():
            try:
                fields["priority"] = int(priority)
            except ValueError:
                raise ApiProblem(422, "priority: must be a whole number", kind="invalid-request",
                                 errors=[FieldError(field="priority", message="must be a whole number")]) from None
        body = submit_mod.parse_submit(fields)
        definition = submit_mod.target_of(app, body)
        inputs = await submit_mod.form_inputs(form, definition, max_bytes=app.settings.media_max_bytes)
    elif content_type in ("application/json", "") or content_type.endswith("+json"):
        body = submit_mod.parse_submit(submit_mod.read_json(await request.body(), app.settings.input_max_depth))
        definition = submit_mod.target_of(app, body)
        inputs = body.inputs
    else:
        raise ApiProblem(415, "send application/json or multipart/form-data", kind="unsupported-media-type")
    run, created = await submit_and_show(app, caller, body, inputs, definition.version, idempotency_key)
    if not created:  # the Idempotency-Key's run, made before (or by a request running alongside)
        response.status_code = 200
    response.headers["Location"] = f"/api/v1/runs/{run['jobRunId']}"
    return run


async def submit_and_show(
    app: App, caller: Caller, body: SubmitRunRequest, inputs: dict[str, Any], version: str,
    idempotency_key: str | None, *, key_id: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Submit the run a request asks for (by the route, or by ``api.lean``); returns the run as
    ``GET /api/v1/runs/{id}`` shows it (read in the transaction that stored it), and whether it
    was made now (False: the Idempotency-Key's run, made before or by a request running
    alongside). ``key_id``: the API key to check in that transaction (``KeyRevoked``), for a
    caller found by ``App.remembered_key``."""
    return await app.submit_shown(
        body.toolId or body.jobId or "",
        inputs,
        key_id=key_id,
        account_id=caller.account_id,
        origin={"platform": "api"},
        idempotency_key=idempotency_key or None,
        callback_url=body.callbackUrl,
        priority=body.priority,
        coerce_text=True,
        allow_local_paths=False,
        version=version,
        cost_ceiling=body.costCeiling,
    )


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiProblem(
            422, "since: give an ISO 8601 time or seconds since the epoch", kind="invalid-request",
            errors=[FieldError(field="query.since", message="give an ISO 8601 time or seconds since the epoch")],
        ) from None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@router.post(
    "/runs/batch",
    response_model=BatchResult,
    summary="Submit many runs of one tool or job",
    tags=["runs"],
    responses={200: {"description": "One result per item, in order: its run, or why it was refused"}},
)
async def submit_batch(
    request: Request, body: SubmitBatchRequest, caller: Caller = Depends(require_caller)
) -> dict[str, Any]:
    """One run per item, each with its own ``inputs`` and optional ``idempotencyKey`` (up to
    1,000 items; stored 500 to a transaction). A bad item is refused with its reason and stops
    nothing: the answer has one result per item, in order. An unknown tool or job refuses the
    whole batch (404)."""
    app = tw(request)
    if (body.toolId is None) == (body.jobId is None):
        raise ApiProblem(422, "give exactly one of toolId and jobId", kind="invalid-request",
                         errors=[FieldError(field="toolId", message="give exactly one of toolId and jobId")])
    results = await app.submit_many(
        body.toolId or body.jobId or "", [item.inputs for item in body.items], account_id=caller.account_id,
        idempotency_keys=[item.idempotencyKey for item in body.items], origin={"platform": "api"},
        callback_url=body.callbackUrl, priority=body.priority, coerce_text=True, version=body.version,
        cost_ceiling=body.costCeiling,
    )
    items: list[dict[str, Any]] = []
    for result in results:
        if result.error is None:
            items.append({"index": result.index, "jobRunId": result.run_id, "created": result.created})
            continue
        if isinstance(result.error, Refused):  # credits (402) or a limit (429): this item was not created
            status = 402 if isinstance(result.error, InsufficientCredits) else 429
            items.append({"index": result.index, "error": {
                "status": status, "title": "Payment required" if status == 402 else "Too many requests",
                "detail": result.error.message, "errors": []}})
            continue
        problems = getattr(result.error, "problems", [])
        root = getattr(result.error, "root", "inputs")
        items.append({"index": result.index, "error": {
            "status": 422, "title": "Unprocessable Content", "detail": str(result.error),
            "errors": [{"field": f"items[{result.index}].{root}.{p.field}" if root else p.field, "message": p.message}
                       for p in problems],
        }})
    created = sum(1 for r in results if r.error is None and r.created)
    refused = sum(1 for r in results if r.error is not None)
    return {"items": items, "created": created, "existing": len(results) - created - refused, "refused": refused}


@router.get("/runs", response_model=RunPage, summary="List runs", tags=["runs"])
async def list_runs(
    request: Request,
    caller: Caller = Depends(require_caller),
    status: Annotated[list[StatusName] | None, Query(description="Only runs in these statuses (repeatable)")] = None,
    job: Annotated[str | None, Query(max_length=200, description="Only runs of this tool or job id")] = None,
    since: Annotated[str | None, Query(max_length=64, description="Only runs created at or after (ISO 8601 or epoch seconds)")] = None,
    cursor: Annotated[str | None, Query(max_length=500, description="`nextCursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Your runs, newest first, with cursor pagination."""
    try:
        page = await tw(request).list_runs(
            caller.scope, status=list(status) if status else None, job_id=job or None, since=_since(since),
            cursor=cursor or None, limit=limit,
        )
    except ValueError as exc:
        raise ApiProblem(400, str(exc), kind="bad-cursor",
                         errors=[FieldError(field="query.cursor", message=str(exc))]) from None
    return {"items": page.items, "nextCursor": page.next_cursor}


@router.get("/runs/{run_id}", response_model=RunDetail, summary="Show a run", tags=["runs"],
            responses={404: {"description": "No such run, or not yours"}})
async def show_run(request: Request, run_id: RunId, caller: Caller = Depends(require_caller)) -> dict[str, Any]:
    """A run with its steps, generations, outputs, cost, timings and callback deliveries."""
    return await tw(request).get_run(run_id, caller.scope)


@router.post("/runs/{run_id}/cancel", response_model=RunDetail, status_code=202, summary="Cancel a run", tags=["runs"],
             responses={404: {"description": "No such run, or not yours"}})
async def cancel_run(request: Request, run_id: RunId, caller: Caller = Depends(require_caller)) -> dict[str, Any]:
    """Ask a run to stop: running generations are cancelled at their backend. A finished run is
    left as it is."""
    app = tw(request)
    async with changing(app, caller, run_id) as account:
        await app.cancel(run_id, account)
    return await app.get_run(run_id, caller.scope)


@router.post(
    "/runs/{run_id}/retry", response_model=RunDetail, status_code=202, summary="Retry a run, or fork it",
    tags=["runs"],
    responses={
        201: {"description": "A fork: the new run (its `Location`), reusing the steps it need not run again",
              "model": RunDetail},
        404: {"description": "No such run, or not yours"},
        409: {"description": "The run has not ended, or (without fromStep and inputs) it is not failed, "
                             "partially completed or cancelled, or nothing would run again"},
        422: {"description": "An unknown fromStep, or bad inputs"},
    },
)
async def retry_run(
    request: Request, response: Response, run_id: RunId, caller: Caller = Depends(require_caller),
    body: RetryRunRequest | None = None,
) -> dict[str, Any]:
    """Without a body (or an empty one): run a failed, partially completed or cancelled run again
    in place, from its unfinished steps; succeeded steps keep their outputs (202).

    With ``fromStep`` and/or ``inputs``: start a new run of the same definition version — for a
    failed or a completed run alike — that runs again ``fromStep``, the steps reading a changed
    input, the steps that did not succeed, and everything downstream of them, and takes over the
    outcome of every other step. 201 with the new run, which names the run it came from
    (``forkedFromRunId``)."""
    app = tw(request)
    if body is None or (body.fromStep is None and not body.inputs):
        async with changing(app, caller, run_id) as account:
            await app.retry(run_id, account)
        return await app.get_run(run_id, caller.scope)
    async with changing(app, caller, run_id) as account:
        new_id = await app.fork(
            run_id, account, from_step=body.fromStep, inputs=body.inputs, origin={"platform": "api"},
            coerce_text=True, allow_local_paths=False,
        )
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/runs/{new_id}"
    return await app.get_run(new_id, caller.scope)


@router.get("/runs/{run_id}/steps/{step_id}/items", response_model=ItemPage, summary="List a map step's items",
            tags=["runs"], responses={404: {"description": "No such run or step, or not yours"},
                                      422: {"description": "The step is not a map step (it has no items)"}})
async def list_step_items(
    request: Request,
    run_id: RunId,
    step_id: Annotated[str, Path(min_length=1, max_length=200, description="The map step's id")],
    caller: Caller = Depends(require_caller),
    after: Annotated[int, Query(ge=-1, le=2**31, description="Items after this index (`nextAfter` of the previous page)")] = -1,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    status: Annotated[ItemStatusName | None, Query(description="Only items in this status")] = None,
) -> dict[str, Any]:
    """The items of a map step in order: each one's value, status, attempts, outputs, error, cost and
    timings, with the step's counts by status."""
    return await tw(request).step_items(run_id, step_id, caller.scope, after=after, limit=limit, status=status)


@router.get(
    "/runs/{run_id}/events",
    summary="Follow a run's events (Server-Sent Events)",
    tags=["runs"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "An event stream: `id` (for Last-Event-ID), `event` (the type) and `data` (the event as JSON)",
            "content": {"text/event-stream": {"schema": _SSE_EVENT}},
        },
        204: {"description": "The run has ended and there is nothing after Last-Event-ID (stop reconnecting)"},
        404: {"description": "No such run, or not yours"},
        429: {"description": "You have as many event streams open as you may (setting sse_max_streams_per_account); "
                             "see Retry-After"},
    },
)
async def run_events(
    request: Request,
    run_id: RunId,
    caller: Caller = Depends(require_caller),
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=16, pattern=r"^[0-9]{1,16}$", description="Resume after this event id")
    ] = None,
    after: Annotated[int | None, Query(ge=0, le=2**53, description="Resume after this event id (for clients that cannot set headers)")] = None,
) -> Response:
    """Every event of the run after ``Last-Event-ID`` (or ``after``), then new ones as they happen;
    the stream ends after the run's final event (run.completed, run.failed, ...)."""
    app = tw(request)
    start = after or 0
    if last_event_id:
        try:
            start = max(start, int(last_event_id))
        except ValueError:
            raise ApiProblem(422, "Last-Event-ID must be an event id (a whole number)", kind="invalid-request",
                             errors=[FieldError(field="header.Last-Event-ID", message="must be a whole number")]) from None
    slots: StreamSlots = request.app.state.streams
    release = slots.take(caller.account_id)
    if release is None:
        raise ApiProblem(
            429, f"account {caller.account_id} has {slots.limit} event streams open, the most it may "
                 "(setting sse_max_streams_per_account); close one or try again later",
            kind="over-limit", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    try:
        pending = await app.events(run_id, caller.scope, start, limit=1)  # 404 here, before the stream starts
        if not pending:
            run = await app.get_run(run_id, caller.scope)
            if RunStatus(run["status"]).terminal:
                release()
                return Response(status_code=204)
    except BaseException:
        release()
        raise
    return _Stream(
        stream(app, run_id, caller.scope, start), release,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class _Stream(StreamingResponse):
    """An event stream that gives its account's slot back when it ends, however it ends (the
    client went away before its first byte too)."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get(
    "/artifacts/{sha256}",
    summary="Download an artifact",
    tags=["artifacts"],
    response_class=FileResponse,
    responses={
        200: {"description": "The file", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
        206: {"description": "The bytes a Range header asked for"},
        400: {"description": "A malformed Range header (named in errors: header.Range)"},
        404: {"description": "No such artifact, or not yours"},
        416: {"description": "The Range starts past the file's end (Content-Range gives its size)"},
    },
)
async def download_artifact(
    request: Request,
    sha256: Sha256,
    caller: Caller = Depends(require_caller),
    download: Annotated[bool, Query(description="Send as an attachment instead of inline")] = False,
    question: Annotated[str | None, Query(
        min_length=1, max_length=64,
        description="An approver reading what a question shows: the question's id (``questionId``)")] = None,
) -> Response:
    """An input or output file of one of your runs (by the sha256 in its artifact value). An
    approver of a question (``GET /questions``) reads what it shows — its candidates, prefilled
    values and shown inputs, nothing else of the run — with ``?question=`` its ``questionId``."""
    path, ref = await tw(request).artifact(sha256, caller.scope, question)
    filename = ref.filename or f"{sha256[:12]}"
    return _ArtifactFile(
        path,
        media_type=ref.mime_type or "application/octet-stream",
        filename=filename,
        content_disposition_type="attachment" if download else "inline",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
            "Cache-Control": "private, max-age=86400, immutable",
        },
    )


class _ArtifactFile(FileResponse):
    """A file whose ``Range`` header, when it is malformed or past the file's end, is answered
    with a problem document (400 naming ``header.Range``; 416 with ``Content-Range``) instead of
    Starlette's plain text; the route's exception handlers turn the ``ApiProblem`` into it, as
    nothing has been sent yet."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            message = f"is not a byte range this file has ({exc.content or 'malformed'}): write it as bytes=START-END"
            raise ApiProblem(400, f"header.Range: {message}", kind="invalid-request",
                             errors=[FieldError(field="header.Range", message=message)]) from None
        except RangeNotSatisfiable as exc:
            raise ApiProblem(416, f"the range starts past the file's end ({exc.max_size} bytes)",
                             kind="range-not-satisfiable", headers={"Content-Range": f"bytes */{exc.max_size}"}) from None


@router.get(
    "/runs/{run_id}/outputs.zip",
    summary="Download a run's outputs",
    tags=["artifacts"],
    response_class=FileResponse,
    responses={
        200: {"description": "A zip archive", "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"description": "No such run, or not yours"},
    },
)
async def download_outputs(request: Request, run_id: RunId, caller: Caller = Depends(require_caller)) -> Response:
    """Every file among the run's final outputs in one zip archive, named after its output
    (``image.png``; ``frames-0.png``, ``frames-1.png`` for a list), with ``outputs.json`` holding
    every output value as the API shows it."""
    app = tw(request)
    run = await app.get_run(run_id, caller.scope)
    files: list[tuple[str, Any]] = []
    for name, value in (run.get("finalOutputs") or {}).items():
        values = value if isinstance(value, list) else [value]
        refs = [v for v in values if isinstance(v, dict) and v.get("kind") == "artifact" and v.get("sha256")]
        for index, ref in enumerate(refs):
            stem = name if len(refs) == 1 and not isinstance(value, list) else f"{name}-{index}"
            path, stored = await app.artifact(str(ref["sha256"]), caller.scope)
            files.append((stem + (mimetypes.guess_extension(stored.mime_type or "") or ""), path))
    summary = json.dumps(run.get("finalOutputs") or {}, indent=2, default=str)
    filename = f"{run['jobDefinitionId']}-{run_id}.zip"
    return StreamingResponse(zip_stream(files, summary), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


ZIP_CHUNK = 1 << 20
"""Bytes of the archive handed to the response at a time."""
ZIP_CHUNKS = 4
"""Chunks written ahead of the response, at most, per download."""


async def zip_stream(files: list[tuple[str, Any]], summary: str) -> AsyncIterator[bytes]:
    """A zip archive of ``files`` ((name in the archive, path)) and ``outputs.json``, written by a
    thread of its own as it is sent: nothing goes to the server's disk and at most ``ZIP_CHUNKS``
    chunks wait (the archive was built whole in a temporary file first, once per request, so
    parallel downloads of a run with large outputs filled the disk). The thread stops when the
    client goes away."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
    room = threading.Semaphore(ZIP_CHUNKS)
    stopped = threading.Event()

    def hand(item: bytes | BaseException | None) -> None:
        while not room.acquire(timeout=0.2):
            if stopped.is_set():
                raise _ZipStopped
        loop.call_soon_threadsafe(ready.put_nowait, item)

    class Pipe(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            chunk = bytes(data)
            hand(chunk)
            return len(chunk)

    def write() -> None:
        try:
            with io.BufferedWriter(Pipe(), ZIP_CHUNK) as out, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
                archive.writestr("outputs.json", summary, compress_type=zipfile.ZIP_DEFLATED)
                for arcname, path in files:
                    archive.write(path, arcname)  # media are compressed already: stored as they are
            hand(None)
        except _ZipStopped:
            return
        except BaseException as exc:  # a file could not be read (or the loop has gone)
            with contextlib.suppress(BaseException):
                hand(exc)

    threading.Thread(target=write, name="toolweave-outputs-zip", daemon=True).start()
    try:
        while True:
            item = await ready.get()
            room.release()
            if item is None:
                break
            if isinstance(item, BaseException):
                log.error("the outputs archive could not be written whole: %s", item)
                break
            yield item
    finally:
        stopped.set()


class _ZipStopped(Exception):
    """The download of an archive stopped (the client went away): its writer ends."""


class ArtifactGrant(BaseModel):
    """Whom to let use an artifact."""

    model_config = ConfigDict(extra="forbid")
    accountId: StoredText = Field(min_length=1, max_length=64, description="The account to share the artifact with")


@router.post(
    "/artifacts/{sha256}/grants",
    status_code=204,
    summary="Share an artifact with another account",
    tags=["artifacts"],
    response_class=Response,
    responses={
        204: {"description": "The account may now read the artifact and use it as an input"},
        404: {"description": "No such artifact, or not yours"},
        422: {"description": "No such account"},
    },
)
async def grant_artifact(request: Request, sha256: Sha256, grant: ArtifactGrant,
                         caller: Caller = Depends(require_caller)) -> Response:
    """Let another account read one of your artifacts and pass it as an input to its runs (it sees
    your file name). An account reaches an artifact only through its own uploads, its own runs'
    outputs, or such a grant."""
    await tw(request).grant_artifact(sha256, caller.account_id, grant.accountId)
    return Response(status_code=204)
