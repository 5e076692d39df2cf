"""The FastAPI application: ``create_app(app, run_worker=..., slots=...)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from toolweave.api import problems
from toolweave.api.lean import LeanRoutes
from toolweave.api.limits import BodyLimit, checked_parameters
from toolweave.api.metrics import Metrics
from toolweave.api.problems import ProblemDetails
from toolweave.api.schemas import SubmitRunRequest
from toolweave.api.sse import StreamSlots
from toolweave.api.version import __version__
from toolweave.app import App

log = logging.getLogger("toolweave.api")

DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
"""Swagger UI's script and style sheet, from the fastapi-offline package: /api/docs needs no CDN."""
_PROBLEM = {"$ref": "#/components/schemas/ProblemDetails"}
_ERROR_DESCRIPTIONS = {
    "400": "Malformed request",
    "401": "No valid API key",
    "403": "Not allowed",
    "404": "Not found",
    "405": "Method not allowed",
    "409": "Conflict with the resource's state",
    "413": "Too large",
    "415": "Unsupported media type",
    "422": "Invalid input: `errors` names every bad field",
}


def _openapi(api: FastAPI) -> dict[str, Any]:
    if api.openapi_schema:
        return api.openapi_schema
    schema = get_openapi(
        title="toolweave",
        version=__version__,
        description=(
            "Run generative-AI tools and durable multi-step jobs. Authenticate with "
            "`Authorization: Bearer <API key>`. Every error is an RFC 9457 problem document "
            "(`application/problem+json`)."
        ),
        routes=api.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ProblemDetails, SubmitRunRequest):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in body.pop("$defs", {}).items():
            components[name] = sub
        components[model.__name__] = body
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status, response in list(responses.items()):
                if status.startswith(("4", "5")):
                    response["content"] = {"application/problem+json": {"schema": _PROBLEM}}
                    response.setdefault("description", _ERROR_DESCRIPTIONS.get(status, "Error"))
            responses["default"] = {
                "description": "An error (RFC 9457 problem details)",
                "content": {"application/problem+json": {"schema": _PROBLEM}},
            }
    _link_runs(schema)
    api.openapi_schema = schema
    return schema


_RUN_LINKS = {
    "ShowRun": ("/api/v1/runs/{run_id}", "get"),
    "FollowRun": ("/api/v1/runs/{run_id}/events", "get"),
    "CancelRun": ("/api/v1/runs/{run_id}/cancel", "post"),
    "RetryRun": ("/api/v1/runs/{run_id}/retry", "post"),
}


def _link_runs(schema: dict[str, Any]) -> None:
    """OpenAPI links from a submitted or shown run to what can be done with it next (show, follow,
    cancel, retry): clients (and schemathesis's stateful tests) follow ``jobRunId``."""
    paths = schema.get("paths", {})
    links: dict[str, Any] = {}
    for name, (path, method) in _RUN_LINKS.items():
        operation = paths.get(path, {}).get(method)
        if operation and operation.get("operationId"):
            links[name] = {"operationId": operation["operationId"], "parameters": {"run_id": "$response.body#/jobRunId"}}
    for path, method in [("/api/v1/runs", "post"), _RUN_LINKS["ShowRun"]]:
        responses = paths.get(path, {}).get(method, {}).get("responses", {})
        for status in ("200", "201", "202"):
            body = responses.get(status, {}).get("content", {}).get("application/json")
            if body is not None:
                responses[status]["links"] = dict(links)


def create_app(app: App, *, run_worker: bool = True, slots: int | None = None, lean: bool = True) -> FastAPI:
    """The HTTP server for ``app``. With ``run_worker`` an embedded worker of ``slots`` slots
    runs for the server's lifetime (started and stopped by the lifespan). The caller closes ``app``.
    ``lean``: webhooks and JSON submits with a key skip FastAPI's machinery (``api.lean``; the
    answers are the same, which tests check with ``lean=False``)."""

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        worker = app.make_worker(slots) if run_worker else None
        task = (
            asyncio.create_task(app.run_worker(worker, kind="serve"), name="toolweave-embedded-worker")
            if worker
            else None
        )
        api.state.worker = worker
        if telegram is not None:
            await telegram.start()
        try:
            yield
        finally:
            if telegram is not None:
                await telegram.stop()
            if worker is not None and task is not None:
                worker.stop()
                try:
                    await asyncio.wait_for(task, 30)
                except (TimeoutError, asyncio.CancelledError):
                    task.cancel()
                except Exception:
                    log.exception("the embedded worker stopped with an error")

    api = FastAPI(
        title="toolweave",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
        dependencies=[Depends(checked_parameters)],
    )
    api.state.toolweave = app
    api.state.metrics = Metrics()
    api.state.streams = StreamSlots(app.settings.sse_max_streams_per_account if app is not None else 0)
    api.state.worker = None
    problems.install(api)
    if app is not None and lean:
        api.add_middleware(LeanRoutes, api=api)  # inside the body limit and the security headers
    if app is not None:
        api.add_middleware(BodyLimit, json_bytes=app.settings.request_max_json_bytes, any_bytes=app.settings.request_max_bytes)

    from toolweave.api import (
        routes_credits,
        routes_definitions,
        routes_questions,
        routes_runs,
        routes_system,
        web,
        web_run,
    )

    api.include_router(routes_definitions.router)
    api.include_router(routes_runs.router)
    api.include_router(routes_questions.router)
    api.include_router(routes_system.router)
    api.include_router(routes_credits.router)
    api.include_router(web.router)
    api.include_router(web_run.router)
    # Telegram in webhook mode: the bot's route, with Telegram's secret-token header checked
    # (kept out of the OpenAPI document: Telegram calls it, not API clients; ``app`` is None when
    # only the document is built, see tests/integration/test_schemathesis.py)
    telegram = None
    settings = app.settings if app is not None else None
    if settings is not None and settings.telegram_token and settings.telegram_webhook_secret:
        from toolweave.telegram.webhook import TelegramWebhook

        telegram = TelegramWebhook(app)
        api.include_router(telegram.router, include_in_schema=False)
    api.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    api.mount("/api/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @api.get("/api/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        """The interactive API reference (Swagger UI), served from this process: works offline."""
        page = get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json", title="toolweave API",
            swagger_js_url="/api/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/api/docs/assets/swagger-ui.css", swagger_favicon_url="/static/logo.svg",
        )
        # a phone-wide screen: long paths and schemas wrap instead of widening the page
        body = bytes(page.body).replace(b"</head>", b'<link rel="stylesheet" href="/static/api-docs.css"></head>', 1)
        return HTMLResponse(body)
    api.openapi = lambda: _openapi(api)  # type: ignore[method-assign]

    api.add_middleware(SecurityHeaders)
    return api


_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)


class SecurityHeaders:
    """Adds the security headers every response carries (unless the route set its own), as a plain
    ASGI middleware: Starlette's ``@app.middleware("http")`` ran each request in a task group of
    its own, a fifth of the server's CPU per submit (``bench/ingress.py``)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
