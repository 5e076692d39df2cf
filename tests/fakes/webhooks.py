"""A stand-in for the engine's webhook route, for service tests: verify the per-generation
token from the URL, parse, deduplicate, ignore anything after a terminal state, finalize and
store — the order the engine follows (the real route lands with the HTTP API)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import LoopbackServer
from toolweave.model.records import RunUpdate
from toolweave.services.base import GenerationContext, WebhookRejected


@dataclass
class WebhookReceiver:
    service: Any
    gens: dict[str, GenerationContext] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    stored: dict[str, list[RunUpdate]] = field(default_factory=dict)
    seen_keys: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    ignored: int = 0

    def __post_init__(self) -> None:
        app = Starlette(routes=[Route("/webhooks/{service}/{generation_id}", self.receive, methods=["POST"])])
        self.server = LoopbackServer(app)

    async def start(self) -> WebhookReceiver:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    def url_for(self, generation_id: str) -> str:
        token = self.tokens.setdefault(generation_id, secrets.token_urlsafe(16))
        return f"{self.server.base_url}/webhooks/{self.service.name}/{generation_id}?token={token}"

    def register(self, gen: GenerationContext) -> None:
        self.gens[gen.generation_id] = gen

    def status(self, generation_id: str) -> RunUpdate | None:
        updates = self.stored.get(generation_id) or []
        return updates[-1] if updates else None

    async def receive(self, request: Request) -> Response:
        generation_id = request.path_params["generation_id"]
        expected = self.tokens.get(generation_id)
        given = request.query_params.get("token", "")
        if expected is None or not hmac.compare_digest(expected, given):
            self.rejected.append("token")
            return JSONResponse({"error": "bad token"}, status_code=403)
        try:
            parsed = self.service.parse_webhook(dict(request.headers), await request.body())
        except WebhookRejected as exc:
            self.rejected.append(str(exc))
            return JSONResponse({"error": str(exc)}, status_code=400)
        gen = self.gens[generation_id]
        if parsed.platform_run_id != gen.platform_run_id:
            self.rejected.append("run id")
            return JSONResponse({"error": "not this generation's run"}, status_code=400)
        key = parsed.event_key or ""
        current = self.status(generation_id)
        if key in self.seen_keys or (current is not None and current.status.terminal):
            self.ignored += 1
            return JSONResponse({"status": "ignored"})
        self.seen_keys.add(key)
        update = parsed.update
        if update.status.terminal:
            update = await self.service.finalize(gen, update)
        self.stored.setdefault(generation_id, []).append(update)
        return JSONResponse({"status": "ok"})
