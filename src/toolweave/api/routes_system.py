"""Health, readiness, metrics, backend webhooks and media URLs for backends."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import FileResponse

from toolweave.api.auth import Caller, require_caller, tw
from toolweave.api.metrics import CONTENT_TYPE, Metrics
from toolweave.api.problems import ApiProblem
from toolweave.api.schemas import Health, QueueStatus, WebhookResult
from toolweave.app import App, NotFound
from toolweave.services.base import ServiceError, WebhookRejected

log = logging.getLogger("toolweave.api")
router = APIRouter()

MAX_WEBHOOK_BYTES = 2 * 1024 * 1024


@router.get("/healthz", response_model=Health, summary="Liveness", tags=["operations"])
async def healthz() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, summary="Readiness", tags=["operations"],
            responses={503: {"description": "The store cannot be reached"}})
async def readyz(request: Request) -> dict[str, str]:
    """200 when the store answers; 503 otherwise."""
    try:
        await tw(request).ping()
    except Exception as exc:
        log.warning("readiness check failed: %s", exc)
        raise ApiProblem(503, "the store does not answer", kind="not-ready") from None
    return {"status": "ready"}


@router.get("/api/v1/status", response_model=QueueStatus, summary="Queue and workers", tags=["operations"])
async def queue_status(request: Request, caller: Caller = Depends(require_caller)) -> dict[str, Any]:
    """The live workers (slots, tasks in hand, last heartbeat), the queue per service, the oldest
    task waiting for a worker, and why queued runs wait (``no worker is running``)."""
    return await tw(request).queue_status(caller.scope)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Runs by status, queue depth and lag, step durations, webhook handling time, backend errors."""
    body = await request.app.state.metrics.render(tw(request))
    return Response(body, media_type=CONTENT_TYPE)


@router.post(
    "/webhooks/{service}/{generation_id}",
    response_model=WebhookResult,
    summary="Receive a backend's webhook",
    tags=["webhooks"],
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"description": "the backend's own payload"}}},
        }
    },
    responses={
        400: {"description": "The body is not an update this service sends"},
        404: {"description": "Unknown service or generation, or a bad token"},
        413: {"description": "The body is too large"},
        503: {"description": "A good update that could not be completed now (an output not downloadable yet): send it again"},
    },
)
async def webhook(
    request: Request,
    service: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")],
    generation_id: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")],
    token: Annotated[str, Query(max_length=128, pattern=r"^[A-Za-z0-9_-]*$", description="The token in the webhook URL the backend was given")],
) -> dict[str, Any]:
    """Where backends (ComfyUI Deploy ...) report on a generation. The URL, with its token, is the
    one toolweave gave the backend; repeats and late updates are answered 200 and change nothing."""
    return await receive_webhook(tw(request), request.app.state.metrics, service, generation_id, token,
                                 dict(request.headers), await request.body())


async def receive_webhook(
    app: App, metrics: Metrics, service: str, generation_id: str, token: str, headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """A backend's webhook, its path and query checked (by the route, or by ``api.lean``)."""
    if len(body) > MAX_WEBHOOK_BYTES:
        raise ApiProblem(413, "the webhook body is too large", kind="too-large")
    started = time.perf_counter()
    outcome = "error"
    try:
        applied = await app.handle_webhook(service, generation_id, token, headers, body)
        outcome = "applied" if applied else "duplicate"
        return {"applied": applied}
    except NotFound:
        outcome = "not_found"
        raise ApiProblem(404, "no such webhook", kind="not-found") from None
    except WebhookRejected as exc:
        outcome = "rejected"
        raise ApiProblem(400, str(exc) or "the body is not a valid update", kind="webhook-rejected") from None
    except ServiceError as exc:
        # the update is good but could not be completed now (an output that cannot be downloaded
        # yet): nothing was recorded; the backend may send it again, and the poll finds it anyway
        outcome = "unavailable"
        if not exc.retryable:
            raise ApiProblem(400, f"the update cannot be applied: {exc}", kind="webhook-rejected") from None
        raise ApiProblem(503, f"the update could not be completed now, send it again: {exc}",
                         kind="webhook-unavailable", headers={"Retry-After": "30"}) from None
    finally:
        label = service if service in app.services else "unknown"
        metrics.webhook_seconds.labels(label, outcome).observe(time.perf_counter() - started)


@router.get(
    "/media/{sha256}",
    summary="An artifact for a backend",
    tags=["webhooks"],
    response_class=FileResponse,
    responses={
        200: {"description": "The file", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"description": "Unknown artifact, a bad token, or an expired URL"},
    },
)
async def media(
    request: Request,
    sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
    token: Annotated[str, Query(max_length=128, pattern=r"^[A-Za-z0-9_-]*$")],
    expires: Annotated[int, Query(ge=0, le=2**53, description="When the URL stops working (Unix seconds)")],
    type: Annotated[str, Query(max_length=120, pattern=r"^[\w.+-]+/[\w.+-]+$", description="The content type it is served with")],
) -> Response:
    """Serves input files to remote backends by the signed URL toolweave handed them: the token
    covers the artifact, the content type and the expiry (``media_url_ttl_seconds``)."""
    app = tw(request)
    if not app.media_token_valid(sha256, type, expires, token):
        raise ApiProblem(404, "no such file, or the link has expired", kind="not-found")
    try:
        path, _ref = await app.artifact(sha256, None)
    except NotFound:
        raise ApiProblem(404, "no such file", kind="not-found") from None
    return FileResponse(path, media_type=type,
                        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox",
                                 "Cache-Control": "private, no-store"})
