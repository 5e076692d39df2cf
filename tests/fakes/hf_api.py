"""Fakes of Hugging Face: the Inference API (``hf-inference`` models) and a Gradio Space (JoyCaption).

Inference API (``router.huggingface.co/hf-inference``), from its task references:

- ``POST /models/{org}/{model}`` for text-to-image: JSON ``{"inputs": prompt, "parameters":
  {guidance_scale, negative_prompt, num_inference_steps, width, height, seed}}``; answers the image
  bytes (``image/jpeg``). A model still loading answers 503 ``{"error": …, "estimated_time": s}``;
- the same route for image-to-text takes the image bytes as the body (``Content-Type: image/…``)
  and answers ``[{"generated_text": …}]``;
- ``Authorization: Bearer hf_…``; errors are ``{"error": "…"}``.

A Gradio Space (Gradio's ``/gradio_api/call/{api_name}`` API): ``POST`` with ``{"data": [...]}``
answers ``{"event_id": …}``; ``GET …/{event_id}`` streams server-sent events that end with
``event: complete`` and the outputs as ``data``, or ``event: error``. Files are
``{"path": "https://…", "meta": {"_type": "gradio.FileData"}}`` that the Space downloads: a
``data:`` URI or a local path is refused, as Gradio refuses files outside its upload folder.
The Space here has JoyCaption Beta One's two endpoints: ``build_prompt`` (caption type, length,
extra options, name → the prompt) and ``chat_joycaption`` (image, prompt, temperature, top_p,
max new tokens, log prompt → the caption, streamed).
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.apis import FakeAPI, fetch, sniff_image

TEXT_TO_IMAGE = "black-forest-labs/FLUX.1-schnell"
IMAGE_TO_TEXT = "Salesforce/blip-image-captioning-large"
T2I_PARAMETERS = {"guidance_scale", "negative_prompt", "num_inference_steps", "width", "height", "seed", "scheduler"}
CAPTION_TYPES = {
    "Descriptive", "Descriptive (Casual)", "Straightforward", "Stable Diffusion Prompt", "MidJourney",
    "Danbooru tag list", "e621 tag list", "Rule34 tag list", "Booru-like tag list", "Art Critic",
    "Product Listing", "Social Media Post",
}
CAPTION_LENGTHS = {"any", "very short", "short", "medium-length", "long", "very long",
                   *(str(i) for i in range(20, 261, 10))}


class FakeHuggingFace(FakeAPI):
    def __init__(self, token: str = "hf_test_token") -> None:
        super().__init__(token)
        self.loading = 0
        """How many more calls answer 503 "currently loading"."""

    def routes(self) -> list[Route]:
        return [Route("/models/{org}/{model}", self.infer, methods=["POST"])]

    def error(self, status: int, message: str, **fields: Any) -> Response:
        return JSONResponse({"error": message, **fields}, status_code=status)

    async def infer(self, request: Request) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        model = f"{request.path_params['org']}/{request.path_params['model']}"
        if model not in (TEXT_TO_IMAGE, IMAGE_TO_TEXT):
            return self.error(404, f"Model {model} does not exist")
        if self.loading > 0:
            self.loading -= 1
            return self.error(503, f"Model {model} is currently loading", estimated_time=3.0)
        if model == IMAGE_TO_TEXT:
            kind = sniff_image(recorded.content)
            if not request.headers.get("content-type", "").startswith("image/") or kind is None:
                return self.error(400, "Could not read the image: send its bytes with an image content type")
            with Image.open(io.BytesIO(recorded.content)) as img:
                return JSONResponse([{"generated_text": f"a picture of {img.width}x{img.height} pixels"}])
        body = recorded.json
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str) or not body["inputs"]:
            return self.error(400, "Input should be a valid string: inputs")
        parameters = body.get("parameters", {})
        extra = sorted(set(body) - {"inputs", "parameters"}) or sorted(set(parameters) - T2I_PARAMETERS)
        if extra:
            return self.error(400, f"Extra inputs are not permitted: {extra[0]}")
        width, height = int(parameters.get("width", 64)), int(parameters.get("height", 48))
        if not (16 <= width <= 2048 and 16 <= height <= 2048):
            return self.error(400, "width and height must be between 16 and 2048")
        buf = io.BytesIO()
        Image.new("RGB", (width // 16, height // 16), (90, 30, 160)).save(buf, format="JPEG")
        return Response(buf.getvalue(), media_type="image/jpeg")


class FakeGradioSpace(FakeAPI):
    """JoyCaption Beta One's Space: public, no credentials needed (a token is accepted)."""

    def __init__(self) -> None:
        super().__init__("")
        self.events: dict[str, tuple[str, Any]] = {}
        self.consumed: set[str] = set()

    def authorised(self, request: Request) -> bool:
        return True

    def routes(self) -> list[Route]:
        return [
            Route("/gradio_api/call/{api}", self.call, methods=["POST"]),
            Route("/gradio_api/call/{api}/{event}", self.stream, methods=["GET"]),
        ]

    async def call(self, request: Request) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        api = request.path_params["api"]
        if api not in ("build_prompt", "chat_joycaption"):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = recorded.json
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return JSONResponse({"detail": [{"loc": ["body", "data"], "msg": "Field required", "type": "missing"}]},
                                status_code=422)
        event = uuid.uuid4().hex
        self.events[event] = (api, body["data"])
        return JSONResponse({"event_id": event})

    async def stream(self, request: Request) -> Response:
        await self.record(request)
        event = request.path_params["event"]
        found = self.events.get(event)
        if found is None or event in self.consumed:
            return JSONResponse({"detail": "Event not found"}, status_code=404)
        self.consumed.add(event)
        api, data = found
        try:
            outputs = await (self._build_prompt(data) if api == "build_prompt" else self._caption(data))
        except ValueError as exc:
            return Response(f"event: error\ndata: {json.dumps(str(exc))}\n\n", media_type="text/event-stream")
        chunks = []
        if api == "chat_joycaption":
            words = outputs[0].split()
            for end in range(1, len(words), 3):
                chunks.append(f"event: generating\ndata: {json.dumps([' '.join(words[:end])])}\n\n")
        chunks.append(f"event: complete\ndata: {json.dumps(outputs)}\n\n")
        return Response("".join(chunks), media_type="text/event-stream")

    @staticmethod
    async def _build_prompt(data: list[Any]) -> list[str]:
        if len(data) != 4:
            raise ValueError(f"build_prompt takes 4 inputs, not {len(data)}")
        caption_type, length, extras, name = data
        if caption_type not in CAPTION_TYPES:
            raise ValueError(f"Value: {caption_type} is not in the list of choices: {sorted(CAPTION_TYPES)}")
        if str(length) not in CAPTION_LENGTHS:
            raise ValueError(f"Value: {length} is not in the list of choices")
        if not isinstance(extras, list) or not all(isinstance(e, str) for e in extras):
            raise ValueError("extra options must be a list of strings")
        prompt = f"Write a {length} {caption_type.lower()} caption for this image."
        if extras:
            prompt += " " + " ".join(extras)
        return [prompt.replace("{name}", name or "{NAME}")]

    @staticmethod
    async def _caption(data: list[Any]) -> list[str]:
        if len(data) != 6:
            raise ValueError(f"chat_joycaption takes 6 inputs, not {len(data)}")
        image, prompt, temperature, top_p, max_tokens, log_prompt = data
        if not isinstance(image, dict) or (image.get("meta") or {}).get("_type") != "gradio.FileData":
            raise ValueError("the image must be a gradio.FileData object")
        path = image.get("path")
        if not isinstance(path, str) or not path.startswith(("http://", "https://")):
            raise ValueError(f"File {str(path)[:40]} is not in the upload folder and cannot be accessed.")
        content = await fetch(path)
        if content is None or sniff_image(content) is None:
            raise ValueError("Could not read the image")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("a prompt is required")
        if not (0 <= float(temperature) <= 2 and 0 <= float(top_p) <= 1 and 1 <= int(max_tokens) <= 2048):
            raise ValueError("Value out of range")
        if not isinstance(log_prompt, bool):
            raise ValueError("log_prompt must be true or false")
        with Image.open(io.BytesIO(content)) as img:
            return [f"{prompt.split('.')[0].removeprefix('Write a ')}: a {img.width}x{img.height} picture"]
