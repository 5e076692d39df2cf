"""A fake fal.ai queue API (``queue.fal.run``) on loopback, from fal's queue documentation.

- ``POST /{model_id}[/{subpath}]`` (``Authorization: Key …``): queues the request; answers
  ``request_id``, ``response_url``, ``status_url``, ``cancel_url`` (under the model id *without*
  the subpath, as fal does); ``?fal_webhook=URL`` asks for a webhook at the end;
- ``GET /{model_id}/requests/{id}/status``: ``IN_QUEUE`` (with ``queue_position``) →
  ``IN_PROGRESS`` → ``COMPLETED``, one step per call (202 until completed);
- ``GET /{model_id}/requests/{id}``: the result once completed (400 before); a request the model
  refused (its input invalid) is ``COMPLETED`` with its result an HTTP 422 of FastAPI's shape;
- ``PUT /{model_id}/requests/{id}/cancel``: ``CANCELLATION_REQUESTED`` while queued, else 400.

The model is flux/schnell: ``prompt`` required, ``image_size`` one of fal's names or
``{width, height}``, ``num_inference_steps`` 1–12, ``num_images`` 1–4, ``seed``,
``enable_safety_checker``, ``output_format`` jpeg/png, ``sync_mode``. A prompt containing ``NSFW``
comes back with ``has_nsfw_concepts: [true]`` (and a black image), as fal's safety checker does.
``play(id)`` completes a request and POSTs its webhook (``status`` OK or ERROR, ``payload``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.apis import FakeAPI, png

MODEL = "fal-ai/flux"
SUBPATHS = {"schnell", "dev"}
IMAGE_SIZES = {"square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"}
PARAMS = {"prompt", "image_size", "num_inference_steps", "num_images", "seed", "enable_safety_checker",
          "output_format", "sync_mode", "acceleration"}


@dataclass
class QueuedRequest:
    id: str
    body: Any
    webhook: str | None
    step: int = 0
    cancelled: bool = False

    @property
    def status(self) -> str:
        return ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")[min(self.step, 2)]


class FakeFal(FakeAPI):
    auth_scheme = "Key"

    def __init__(self, token: str = "fal-key-id:fal-key-secret") -> None:
        super().__init__(token)
        self.queued: dict[str, QueuedRequest] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/fal-ai/flux/requests/{id}/status", self.status, methods=["GET"]),
            Route("/fal-ai/flux/requests/{id}/cancel", self.cancel, methods=["PUT"]),
            Route("/fal-ai/flux/requests/{id}", self.result, methods=["GET"]),
            Route("/fal-ai/flux/{subpath}", self.submit, methods=["POST"]),
        ]

    def error(self, status: int, message: str, **fields: Any) -> Response:
        return JSONResponse({"detail": message, **fields}, status_code=status)

    def urls(self, request_id: str) -> dict[str, str]:
        base = f"{self.base_url}/{MODEL}/requests/{request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    async def submit(self, request: Request) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        if request.path_params["subpath"] not in SUBPATHS:
            return self.error(404, f"Application '{request.path_params['subpath']}' not found")
        if recorded.json is None or isinstance(recorded.json, ValueError):
            return self.error(400, "the request body must be JSON")
        webhook = request.query_params.get("fal_webhook")
        queued = QueuedRequest(str(uuid.uuid4()), recorded.json, webhook)
        self.queued[queued.id] = queued
        return JSONResponse({"request_id": queued.id, "gateway_request_id": queued.id, **self.urls(queued.id),
                             "queue_position": 0})

    def _find(self, request: Request) -> QueuedRequest | None:
        return self.queued.get(request.path_params["id"])

    async def status(self, request: Request) -> Response:
        _, answer = await self.begin(request)
        if answer is not None:
            return answer
        queued = self._find(request)
        if queued is None:
            return self.error(404, "Request not found")
        body: dict[str, Any] = {"status": queued.status, **self.urls(queued.id)}
        if queued.status == "IN_QUEUE":
            body["queue_position"] = 0
        if queued.status == "COMPLETED":
            body["metrics"] = {"inference_time": 0.41}
        code = 200 if queued.status == "COMPLETED" else 202
        if queued.step < 2 and not queued.cancelled:
            queued.step += 1
        return JSONResponse(body, status_code=code)

    def outcome(self, queued: QueuedRequest) -> tuple[int, Any]:
        """What the model made of the request: (HTTP status, body), as the result endpoint gives."""
        body = queued.body
        problems: list[dict[str, Any]] = []
        if not isinstance(body, dict):
            return 422, {"detail": [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]}
        for name in sorted(set(body) - PARAMS):
            problems.append({"loc": ["body", name], "msg": "extra fields not permitted", "type": "value_error.extra"})
        if not isinstance(body.get("prompt"), str) or not body.get("prompt"):
            problems.append({"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"})
        size = body.get("image_size", "landscape_4_3")
        if not (size in IMAGE_SIZES or (isinstance(size, dict) and set(size) == {"width", "height"})):
            problems.append({"loc": ["body", "image_size"], "msg": "value is not a valid enumeration member",
                             "type": "type_error.enum"})
        steps = body.get("num_inference_steps", 4)
        if not isinstance(steps, int) or not 1 <= steps <= 12:
            problems.append({"loc": ["body", "num_inference_steps"], "msg": "ensure this value is less than or equal to 12",
                             "type": "value_error.number.not_le"})
        count = body.get("num_images", 1)
        if not isinstance(count, int) or not 1 <= count <= 4:
            problems.append({"loc": ["body", "num_images"], "msg": "ensure this value is less than or equal to 4",
                             "type": "value_error.number.not_le"})
        if problems:
            return 422, {"detail": problems}
        nsfw = "NSFW" in body["prompt"]
        color = (0, 0, 0) if nsfw else (240, 200, 30)
        fmt = "image/png" if body.get("output_format") == "png" else "image/jpeg"
        images = []
        for _ in range(count):
            data = png(color, (40, 30)) if fmt == "image/png" else _jpeg(color)
            images.append({"url": self.file_url(data, fmt), "width": 40, "height": 30, "content_type": fmt})
        return 200, {"images": images, "timings": {"inference": 0.41}, "seed": body.get("seed", 42),
                     "has_nsfw_concepts": [nsfw] * count, "prompt": body["prompt"]}

    async def result(self, request: Request) -> Response:
        _, answer = await self.begin(request)
        if answer is not None:
            return answer
        queued = self._find(request)
        if queued is None:
            return self.error(404, "Request not found")
        if queued.status != "COMPLETED":
            return self.error(400, "Request is still in progress")
        status, body = self.outcome(queued)
        return JSONResponse(body, status_code=status)

    async def cancel(self, request: Request) -> Response:
        _, answer = await self.begin(request)
        if answer is not None:
            return answer
        queued = self._find(request)
        if queued is None:
            return self.error(404, "Request not found")
        if queued.status != "IN_QUEUE":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        queued.cancelled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    async def play(self, request_id: str) -> int | None:
        """Complete a request and POST its webhook (when it asked for one); the webhook's code."""
        queued = self.queued[request_id]
        queued.step = 2
        if not queued.webhook:
            return None
        status, payload = self.outcome(queued)
        body = {"request_id": queued.id, "gateway_request_id": queued.id,
                "status": "OK" if status == 200 else "ERROR", "payload": payload,
                "error": None if status == 200 else f"Invalid status code: {status}"}
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(queued.webhook, content=json.dumps(body),
                                         headers={"Content-Type": "application/json"})
        return response.status_code


def _jpeg(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="JPEG")
    return buf.getvalue()
