"""A fake OpenAI API (Images generate and edit, Chat Completions with vision) on loopback.

Written from OpenAI's API reference, and strict where it is:

- ``POST /v1/images/generations`` (JSON): ``prompt`` required (at most 1000 characters for
  dall-e-2, 4000 for dall-e-3, 32000 for gpt-image-1); ``model`` dall-e-2 (default), dall-e-3,
  gpt-image-1; ``n`` 1–10, only 1 for dall-e-3; ``size`` and ``quality`` from each model's list;
  ``response_format`` (url | b64_json) refused for gpt-image-1, which always answers base64;
  ``style`` for dall-e-3 only; any other parameter is "Unrecognized request argument";
- ``POST /v1/images/edits`` (multipart): ``image`` file(s) (dall-e-2: one square PNG under 4 MB;
  gpt-image-1: PNG, WebP or JPEG under 50 MB, up to 16 as ``image[]``), ``prompt`` required;
- ``POST /v1/chat/completions`` (JSON): ``model`` and ``messages`` required; content is text or a
  list of ``text`` / ``image_url`` parts, images only for vision models, as an http(s) URL (which
  it downloads) or a ``data:image/…;base64,`` URI of PNG, JPEG, WebP or GIF.

A prompt containing ``FORBIDDEN`` is refused by the safety system (``content_policy_violation``
for DALL·E, ``moderation_blocked`` for gpt-image-1; a ``refusal`` in chat). Generated images are
PNGs whose colour and size follow the request, so tests can see what was asked for.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.apis import FakeAPI, data_uri_image, fetch, png, sniff_image

PROMPT_LIMIT = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image-1": 32000}
SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "gpt-image-1": {"1024x1024", "1536x1024", "1024x1536", "auto"},
}
QUALITIES = {
    "dall-e-2": {"standard"},
    "dall-e-3": {"standard", "hd"},
    "gpt-image-1": {"low", "medium", "high", "auto"},
}
GENERATION_PARAMS = {
    "prompt", "model", "n", "quality", "response_format", "size", "style", "user", "background",
    "moderation", "output_compression", "output_format",
}
GPT_IMAGE_ONLY = {"background", "moderation", "output_compression", "output_format"}
VISION_MODELS = {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"}
CHAT_PARAMS = {
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop",
    "presence_penalty", "frequency_penalty", "user", "seed", "response_format",
}
TINY_PIXEL = (8, 8)
"""Generated images are small: the tests move them around, they need not be 1024 pixels wide."""


class FakeOpenAI(FakeAPI):
    def __init__(self, token: str = "sk-test-openai") -> None:
        super().__init__(token)
        self.image_calls = 0
        self.chat_calls = 0

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self.generations, methods=["POST"]),
            Route("/v1/images/edits", self.edits, methods=["POST"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
        ]

    def error(self, status: int, message: str, **fields: Any) -> Response:
        body = {"message": message, "type": fields.pop("type", "invalid_request_error"),
                "param": fields.pop("param", None), "code": fields.pop("code", None)}
        return JSONResponse({"error": body}, status_code=status)

    def _image(self, model: str, color: tuple[int, int, int], as_url: bool, prompt: str) -> dict[str, Any]:
        data = png(color, TINY_PIXEL, padding=4096)
        item: dict[str, Any] = {"url": self.file_url(data)} if as_url else {"b64_json": base64.b64encode(data).decode()}
        if model == "dall-e-3":
            item["revised_prompt"] = f"A detailed rendering of: {prompt}"
        return item

    @staticmethod
    def _color(prompt: str) -> tuple[int, int, int]:
        lowered = prompt.lower()
        if "blue" in lowered:
            return (30, 60, 220)
        if "green" in lowered:
            return (30, 200, 60)
        return (210, 40, 40)

    # --- images ------------------------------------------------------------------------------

    async def generations(self, request: Request) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        body = recorded.json
        if not request.headers.get("content-type", "").startswith("application/json") or not isinstance(body, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - GENERATION_PARAMS)
        if unknown:
            return self.error(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model = body.get("model", "dall-e-2")
        if model not in PROMPT_LIMIT:
            return self.error(404, f"The model `{model}` does not exist or you do not have access to it.",
                              code="model_not_found")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return self.error(400, "Missing required parameter: 'prompt'.", param="prompt")
        if len(prompt) > PROMPT_LIMIT[model]:
            return self.error(400, f"'prompt' is too long: maximum {PROMPT_LIMIT[model]} characters for {model}.",
                              param="prompt", code="string_above_max_length")
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10 or (model == "dall-e-3" and n != 1):
            return self.error(400, f"Invalid 'n': {n!r} ({model} takes {'only 1' if model == 'dall-e-3' else '1 to 10'}).",
                              param="n")
        size = body.get("size", "1024x1024")
        if size not in SIZES[model]:
            return self.error(400, f"Invalid value: '{size}'. Supported values are: {', '.join(sorted(SIZES[model]))}.",
                              param="size", code="invalid_value")
        quality = body.get("quality")
        if quality is not None and quality not in QUALITIES[model]:
            return self.error(400, f"Invalid value: '{quality}'. Supported values are: "
                              f"{', '.join(sorted(QUALITIES[model]))}.", param="quality", code="invalid_value")
        fmt = body.get("response_format")
        if fmt is not None and model == "gpt-image-1":
            return self.error(400, "Unknown parameter: 'response_format'.", param="response_format",
                              code="unknown_parameter")
        if fmt not in (None, "url", "b64_json"):
            return self.error(400, f"Invalid value: '{fmt}'.", param="response_format", code="invalid_value")
        if body.get("style") is not None and model != "dall-e-3":
            return self.error(400, "'style' is only supported for dall-e-3.", param="style")
        if model != "gpt-image-1" and set(body) & GPT_IMAGE_ONLY:
            return self.error(400, f"{sorted(set(body) & GPT_IMAGE_ONLY)[0]} is only supported for gpt-image-1.")
        if "FORBIDDEN" in prompt:
            code = "moderation_blocked" if model == "gpt-image-1" else "content_policy_violation"
            return self.error(400, "Your request was rejected as a result of our safety system.", code=code,
                              type="image_generation_user_error")
        self.image_calls += 1
        as_url = model != "gpt-image-1" and fmt != "b64_json"
        color = self._color(prompt)
        answer: dict[str, Any] = {"created": int(time.time()),
                                  "data": [self._image(model, color, as_url, prompt) for _ in range(n)]}
        if model == "gpt-image-1":
            answer["usage"] = {"input_tokens": 50, "output_tokens": 4160, "total_tokens": 4210}
        return JSONResponse(answer)

    async def edits(self, request: Request) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return self.error(400, "Invalid Content-Type header, expected multipart/form-data.")
        form = recorded.form
        model = form.get("model", "dall-e-2")
        if model not in ("dall-e-2", "gpt-image-1"):
            return self.error(400, f"Invalid value: '{model}'. Supported values are: 'dall-e-2' and 'gpt-image-1'.",
                              param="model")
        images = recorded.files.get("image", []) + recorded.files.get("image[]", [])
        if not images:
            return self.error(400, "Missing required parameter: 'image'.", param="image")
        if model == "dall-e-2" and len(images) > 1:
            return self.error(400, "dall-e-2 edits take one image.", param="image")
        if len(images) > 16:
            return self.error(400, "At most 16 images.", param="image")
        for _, data, _ in images:
            kind = sniff_image(data)
            allowed = {"PNG"} if model == "dall-e-2" else {"PNG", "JPEG", "WEBP"}
            limit = 4 * 1024 * 1024 if model == "dall-e-2" else 50 * 1024 * 1024
            if kind not in allowed:
                return self.error(400, f"Invalid image file: expected {' or '.join(sorted(allowed))}.",
                                  param="image", code="invalid_image_format")
            if len(data) >= limit:
                return self.error(400, "Image file is too large.", param="image", code="image_too_large")
        prompt = form.get("prompt")
        if not prompt:
            return self.error(400, "Missing required parameter: 'prompt'.", param="prompt")
        if "FORBIDDEN" in prompt:
            return self.error(400, "Your request was rejected as a result of our safety system.",
                              code="moderation_blocked", type="image_generation_user_error")
        unknown = sorted(set(form) - {"prompt", "model", "n", "size", "quality", "response_format", "user",
                                      "background", "output_format", "input_fidelity"})
        if unknown:
            return self.error(400, f"Unrecognized request argument supplied: {unknown[0]}")
        self.image_calls += 1
        return JSONResponse({"created": int(time.time()),
                             "data": [self._image(model, self._color(prompt), model == "dall-e-2", prompt)],
                             **({"usage": {"input_tokens": 300, "output_tokens": 4160, "total_tokens": 4460}}
                                if model == "gpt-image-1" else {})})

    # --- chat --------------------------------------------------------------------------------

    async def chat(self, request: Request) -> Response:
        recorded, answer = await self.begin(request)
        if answer is not None:
            return answer
        body = recorded.json
        if not isinstance(body, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        unknown = sorted(set(body) - CHAT_PARAMS)
        if unknown:
            return self.error(400, f"Unrecognized request argument supplied: {unknown[0]}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter", param="model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "'messages' must be a non-empty array.", param="messages")
        texts: list[str] = []
        images: list[tuple[int, int]] = []
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
                return self.error(400, f"Invalid value for 'messages[{index}].role'.", param=f"messages[{index}]")
            content = message.get("content")
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(parts, list):
                return self.error(400, f"Invalid type for 'messages[{index}].content'.", param=f"messages[{index}].content")
            for part in parts:
                if not isinstance(part, dict) or part.get("type") not in ("text", "image_url"):
                    return self.error(400, f"Invalid content part in messages[{index}].")
                if part["type"] == "text":
                    if not isinstance(part.get("text"), str):
                        return self.error(400, f"messages[{index}]: a text part needs text.")
                    if message["role"] == "user":
                        texts.append(part["text"])
                    continue
                if model not in VISION_MODELS:
                    return self.error(400, "Invalid content type. image_url is only supported by certain models.",
                                      param=f"messages[{index}].content")
                url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
                if not isinstance(url, str):
                    return self.error(400, f"messages[{index}]: image_url.url is required.")
                size = await self._image_size(url)
                if size is None:
                    return self.error(400, "Invalid image: it must be a PNG, JPEG, WebP or GIF, given as an "
                                      "https URL or a base64 data URL.", code="invalid_image_url")
                images.append(size)
        self.chat_calls += 1
        prompt = " ".join(texts)
        refusal = None
        if "FORBIDDEN" in prompt:
            content, refusal = None, "I'm sorry, I can't help with that."
        elif images:
            w, h = images[0]
            content = f"A photograph, {w} by {h} pixels, of {prompt or 'something'}."
        else:
            content = f"{prompt}, golden hour, ultra detailed, 35mm photograph"
        usage = {"prompt_tokens": 10 * len(messages) + 85 * len(images), "completion_tokens": 24}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse({
            "id": f"chatcmpl-{self.chat_calls}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": refusal},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage,
        })

    @staticmethod
    async def _image_size(url: str) -> tuple[int, int] | None:
        import io

        from PIL import Image

        if url.startswith("data:"):
            if data_uri_image(url) not in ("PNG", "JPEG", "WEBP", "GIF"):
                return None
            data = base64.b64decode(url.split(",", 1)[1])
        elif url.startswith(("http://", "https://")):
            fetched = await fetch(url)
            if fetched is None or sniff_image(fetched) not in ("PNG", "JPEG", "WEBP", "GIF"):
                return None
            data = fetched
        else:
            return None
        with Image.open(io.BytesIO(data)) as img:
            return img.width, img.height
