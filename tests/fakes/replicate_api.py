"""A fake Replicate HTTP API (predictions) on loopback, from Replicate's API reference.

- ``POST /v1/models/{owner}/{name}/predictions`` and ``POST /v1/predictions`` (with ``version``):
  ``input`` (an object) required; ``webhook`` and ``webhook_events_filter`` (``start``,
  ``output``, ``logs``, ``completed``) optional; anything else refused. The model's input schema
  is checked (flux-schnell's: ``prompt`` required, ``aspect_ratio``, ``num_outputs`` 1–4,
  ``output_format`` webp/jpg/png, ``seed``…), a violation answered 422 the way Replicate does;
- ``GET /v1/predictions/{id}``: the prediction; each GET moves it one state on
  (``starting`` → ``processing`` → ``succeeded``), so tests never depend on timing;
- ``POST /v1/predictions/{id}/cancel``: ``canceled``.

``play(id)`` moves a prediction to its end and POSTs the webhooks its filter asks for (the body is
the prediction object, as Replicate sends it). A prompt containing ``NSFW`` fails the prediction
the way the safety checker does. Outputs are URLs of this server's ``/files/``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.apis import FakeAPI, png

FLUX_SCHNELL = "black-forest-labs/flux-schnell"
SCHEMAS: dict[str, dict[str, Any]] = {
    FLUX_SCHNELL: {
        "required": {"prompt"},
        "enums": {
            "aspect_ratio": {"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"},
            "output_format": {"webp", "jpg", "png"},
            "megapixels": {"1", "0.25"},
        },
        "ranges": {"num_outputs": (1, 4), "num_inference_steps": (1, 4), "output_quality": (0, 100)},
        "others": {"seed", "go_fast", "disable_safety_checker"},
    }
}
EVENTS = {"start", "output", "logs", "completed"}


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    webhook: str | None
    events: set[str]
    states: list[str] = field(default_factory=lambda: ["starting", "processing", "succeeded"])
    step: int = 0
    output: list[str] | None = None
    error: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def status(self) -> str:
        return self.states[min(self.step, len(self.states) - 1)]


class FakeReplicate(FakeAPI):
    def __init__(self, token: str = "r8_test_replicate") -> None:
        super().__init__(token)
        self.predictions: dict[str, Prediction] = {}
        self.webhooks_sent: list[tuple[str, dict[str, Any], int]] = []

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models/{owner}/{name}/predictions", self.create_for_model, methods=["POST"]),
            Route("/v1/predictions", self.create_for_version, methods=["POST"]),
            Route("/v1/predictions/{id}", self.get, methods=["GET"]),
            Route("/v1/predictions/{id}/cancel", self.cancel, methods=["POST"]),
        ]

    def error(self, status: int, message: str, **fields: Any) -> Response:
        title = fields.pop("title", {401: "Unauthenticated", 404: "Not found", 422: "Input validation failed"}.get(status, "Error"))
        return JSONResponse({"title": title, "detail": message, "status": status, **fields}, status_code=status)

    def prediction_body(self, p: Prediction) -> dict[str, Any]:
        base = f"{self.base_url}/v1/predictions/{p.id}"
        done = p.status in ("succeeded", "failed", "canceled")
        return {
            "id": p.id, "model": p.model, "version": "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637",
            "input": p.input, "logs": "", "output": p.output if p.status == "succeeded" else None,
            "data_removed": False, "error": p.error if p.status == "failed" else None, "status": p.status,
            "created_at": p.created_at, "started_at": p.created_at if p.step else None,
            "completed_at": datetime.now(UTC).isoformat() if done else None,
            "urls": {"get": base, "cancel": f"{base}/cancel", "stream": f"{base}/stream", "web": f"https://replicate.com/p/{p.id}"},
            **({"metrics": {"predict_time": 0.48}} if done else {}),
        }

    # --- create ------------------------------------------------------------------------------

    async def create_for_model(self, request: Request) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        return await self._create(request, model)

    async def create_for_version(self, request: Request) -> Response:
        return await self._create(request, None)

    async def _create(self, request: Request, model: str | None) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        body = recorded.json
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.", title="Bad request")
        allowed = {"input", "webhook", "webhook_events_filter", "stream"} | ({"version"} if model is None else set())
        extra = sorted(set(body) - allowed)
        if extra:
            return self.error(422, f"- (root): Additional property {extra[0]} is not allowed\n")
        if model is None:
            model = FLUX_SCHNELL if body.get("version") else ""
            if not model:
                return self.error(422, "- version: version is required\n")
        if model not in SCHEMAS:
            return self.error(404, "The requested resource could not be found.")
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return self.error(422, "- input: Invalid type. Expected: object, given: " + type(inputs).__name__ + "\n")
        problem = _check_input(SCHEMAS[model], inputs)
        if problem:
            return self.error(422, f"- input.{problem}\n",
                              invalid_fields=[{"type": "invalid", "field": f"input.{problem.split(':', 1)[0]}",
                                               "description": problem.split(": ", 1)[-1]}])
        webhook = body.get("webhook")
        if webhook is not None and (not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))):
            return self.error(422, "- webhook: Does not match format 'uri'\n")
        events = body.get("webhook_events_filter", ["start", "output", "logs", "completed"])
        if not isinstance(events, list) or not set(events) <= EVENTS:
            return self.error(422, "- webhook_events_filter: must be a list of start, output, logs, completed\n")
        prediction = Prediction(secrets.token_hex(13), model, inputs, webhook, set(events))
        if "NSFW" in str(inputs.get("prompt", "")):
            prediction.states = ["starting", "processing", "failed"]
            prediction.error = "NSFW content detected. Try running it again, or try a different prompt."
        else:
            count = int(inputs.get("num_outputs", 1))
            fmt = {"jpg": "image/jpeg", "png": "image/png"}.get(str(inputs.get("output_format", "webp")), "image/webp")
            prediction.output = [self.file_url(_image(fmt, i)) for i in range(count)]
        self.predictions[prediction.id] = prediction
        return JSONResponse(self.prediction_body(prediction), status_code=201)

    # --- get, cancel, play -------------------------------------------------------------------

    async def get(self, request: Request) -> Response:
        _, answer = await self.begin(request)
        if answer is not None:
            return answer
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return self.error(404, "The requested resource could not be found.")
        body = self.prediction_body(prediction)
        if prediction.step < len(prediction.states) - 1:
            prediction.step += 1
        return JSONResponse(body)

    async def cancel(self, request: Request) -> Response:
        _, answer = await self.begin(request)
        if answer is not None:
            return answer
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return self.error(404, "The requested resource could not be found.")
        if prediction.status not in ("succeeded", "failed", "canceled"):
            prediction.states = [*prediction.states[: prediction.step + 1], "canceled"]
            prediction.step = len(prediction.states) - 1
        return JSONResponse(self.prediction_body(prediction))

    async def play(self, prediction_id: str, *, send: bool = True) -> list[int]:
        """Run a prediction to its end, POSTing the webhooks its filter asks for; their codes."""
        prediction = self.predictions[prediction_id]
        codes: list[int] = []
        while True:
            event = "start" if prediction.step == 0 else None
            done = prediction.status in ("succeeded", "failed", "canceled")
            if done:
                event = "completed"
            if send and prediction.webhook and event in prediction.events:
                codes.append(await self.send_webhook(prediction, self.prediction_body(prediction)))
            if done:
                return codes
            prediction.step += 1

    async def send_webhook(self, prediction: Prediction, body: dict[str, Any]) -> int:
        assert prediction.webhook is not None
        headers = {"Content-Type": "application/json", "webhook-id": f"msg_{secrets.token_hex(8)}",
                   "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(prediction.webhook, content=json.dumps(body), headers=headers)
        self.webhooks_sent.append((prediction.webhook, body, response.status_code))
        return response.status_code


def _check_input(schema: dict[str, Any], inputs: dict[str, Any]) -> str | None:
    for name in sorted(schema["required"]):
        if not isinstance(inputs.get(name), str) or not inputs[name]:
            return f"{name}: {name} is required"
    known = set(schema["required"]) | set(schema["enums"]) | set(schema["ranges"]) | set(schema["others"])
    for name, value in inputs.items():
        if name not in known:
            return f"{name}: Additional property {name} is not allowed"
        if name in schema["enums"] and value not in schema["enums"][name]:
            return f"{name}: {name} must be one of the following: " + ", ".join(sorted(schema["enums"][name]))
        if name in schema["ranges"]:
            low, high = schema["ranges"][name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                return f"{name}: Must be between {low} and {high}"
        if name == "seed" and (not isinstance(value, int) or isinstance(value, bool)):
            return "seed: Invalid type. Expected: integer"
    return None


def _image(mime: str, index: int) -> bytes:
    import io

    from PIL import Image

    if mime == "image/png":
        return png((20 + index, 120, 200), (48, 32))
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (20 + index, 120, 200)).save(buf, format="JPEG" if mime == "image/jpeg" else "WEBP")
    return buf.getvalue()
