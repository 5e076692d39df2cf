"""The OpenAI presets (examples/http) through the http service against a strict fake OpenAI API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tests.fakes.apis import png
from tests.fakes.host import FakeHost
from tests.fakes.openai_api import FakeOpenAI
from tests.helpers.host import generation_context

from toolweave.model.definitions import ToolDefinition
from toolweave.model.status import GenerationStatus
from toolweave.registry import Registry
from toolweave.services.base import ServiceError
from toolweave.services.catalog import ServiceCatalog
from toolweave.services.http import HttpService
from toolweave.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "examples" / "http"
TOKEN = "sk-test-openai-0123456789"


@pytest.fixture
async def api() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI(TOKEN).start()
    yield fake
    await fake.stop()


def catalog_for(tmp_path: Path, api: FakeOpenAI, env: dict[str, str] | None = None) -> ServiceCatalog:
    settings = Settings(home=tmp_path, services={"openai": {"base_url": f"{api.base_url}/v1"}})
    return ServiceCatalog(settings, env={"OPENAI_API_KEY": TOKEN} if env is None else env, plugins=[])


@pytest.fixture
def catalog(tmp_path: Path, api: FakeOpenAI) -> ServiceCatalog:
    return catalog_for(tmp_path, api)


@pytest.fixture
def registry(catalog: ServiceCatalog) -> Registry:
    registry = Registry(service_check=catalog.check_tool)
    problems = registry.load(sorted(PRESETS.glob("openai-*.yaml")))
    assert problems == [], [str(p) for p in problems]
    return registry


@pytest.fixture
def openai(catalog: ServiceCatalog, host: FakeHost) -> HttpService:
    service = catalog.build(host)["openai"]
    assert isinstance(service, HttpService)
    return service


def tool(registry: Registry, tool_id: str) -> ToolDefinition:
    return registry.tool(tool_id)


def image_of(host: FakeHost, value: dict[str, Any]) -> Image.Image:
    return host.open_image(value)


def test_the_presets_need_their_credentials(tmp_path: Path, api: FakeOpenAI) -> None:
    registry = Registry(service_check=catalog_for(tmp_path, api, env={}).check_tool)
    problems = [p for p in registry.load([PRESETS]) if "openai" in p.file]
    assert problems and all(
        p.path == "service"
        and p.message == "service 'openai' is not configured: environment variable OPENAI_API_KEY is not set"
        for p in problems
    )


async def test_dall_e_3_sends_what_the_api_takes_and_downloads_the_image(
    openai: HttpService, registry: Registry, api: FakeOpenAI, host: FakeHost
) -> None:
    dalle = tool(registry, "openai.dall-e-3")
    gen = generation_context(dalle, {"prompt": "a blue fox", "size": "1024x1024", "quality": "hd", "style": "vivid"})
    submission = await openai.submit(gen)
    (sent,) = api.requests
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.json == {"model": "dall-e-3", "prompt": "a blue fox", "n": 1, "size": "1024x1024",
                         "quality": "hd", "style": "vivid", "response_format": "url"}
    update = submission.update
    assert submission.platform_run_id is None and update is not None
    assert update.status is GenerationStatus.COMPLETED, update.error
    outputs = update.outputs or {}
    assert outputs["revised_prompt"] == "A detailed rendering of: a blue fox"
    assert image_of(host, outputs["image"]).getpixel((0, 0)) == (30, 60, 220)
    assert outputs["image"]["mimeType"] == "image/png" and api.downloads == 1
    assert update.cost_usd == Decimal("0.08")
    # What is recorded of the exchange: no credentials, no headers.
    assert TOKEN not in repr(update.raw) and "authorization" not in repr(update.raw).lower()
    assert update.raw and update.raw["request"] == f"POST {api.base_url}/v1/images/generations"


async def test_gpt_image_1_takes_base64_and_no_response_format(
    openai: HttpService, registry: Registry, api: FakeOpenAI, host: FakeHost
) -> None:
    gen = generation_context(tool(registry, "openai.gpt-image-1"), {"prompt": "green hills"})
    update = (await openai.submit(gen)).update
    assert update is not None and update.status is GenerationStatus.COMPLETED, update and update.error
    assert "response_format" not in api.requests[0].json
    # An absent optional input leaves its key out: the API's own default applies.
    assert api.requests[0].json == {"model": "gpt-image-1", "prompt": "green hills", "n": 1,
                                    "size": "1024x1024", "quality": "medium", "background": "auto"}
    assert image_of(host, (update.outputs or {})["image"]).getpixel((1, 1)) == (30, 200, 60)
    assert update.cost_usd == Decimal("0.042")
    assert api.downloads == 0  # base64 in the answer, nothing to download
    # The raw record keeps the answer's shape, not its megabytes of base64.
    assert update.raw and update.raw["response"]["data"][0]["b64_json"].startswith("<")


async def test_an_edit_sends_the_image_as_a_multipart_file(
    openai: HttpService, registry: Registry, api: FakeOpenAI, host: FakeHost
) -> None:
    source = png((1, 2, 3), (20, 20))
    image = host.put_bytes(source, "image/png", "photo.png")
    gen = generation_context(tool(registry, "openai.gpt-image-1.edit"), {"image": image, "prompt": "make it blue"})
    update = (await openai.submit(gen)).update
    assert update is not None and update.status is GenerationStatus.COMPLETED, update and update.error
    sent = api.requests[0]
    assert sent.headers["content-type"].startswith("multipart/form-data")
    assert sent.files == {"image[]": [("photo.png", source, "image/png")]}
    assert sent.form == {"model": "gpt-image-1", "prompt": "make it blue", "size": "auto", "quality": "medium"}
    assert "mask" not in sent.files  # absent: no empty part
    assert image_of(host, (update.outputs or {})["image"]).getpixel((0, 0)) == (30, 60, 220)


async def test_a_text_file_given_as_the_image_is_refused_before_anything_is_sent(
    openai: HttpService, registry: Registry, api: FakeOpenAI, host: FakeHost
) -> None:
    text = host.put_bytes(b"not an image at all", None, "photo.png")
    gen = generation_context(tool(registry, "openai.gpt-image-1.edit"), {"image": text, "prompt": "x"})
    with pytest.raises(ServiceError) as caught:
        await openai.submit(gen)
    assert caught.value.code == "bad_input" and "nothing was sent" in caught.value.message
    assert api.requests == []


async def test_a_refusal_by_the_safety_system_is_named_moderation(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    for tool_id, code in (("openai.dall-e-3", "content_policy_violation"), ("openai.gpt-image-1", "moderation_blocked")):
        gen = generation_context(tool(registry, tool_id), {"prompt": "something FORBIDDEN"})
        with pytest.raises(ServiceError) as caught:
            await openai.submit(gen)
        error = caught.value
        assert (error.code, error.retryable) == ("moderation", False)
        assert "moderation" in error.message and "safety system" in error.message
        assert error.details == {"httpStatus": 400, "providerCode": code}


async def test_rate_limits_and_server_errors_are_retryable_with_the_backends_delay(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    dalle = tool(registry, "openai.dall-e-3")
    api.fail_next(429, {"error": {"message": "Rate limit reached for images per minute", "type": "requests",
                                  "code": "rate_limit_exceeded"}}, headers={"Retry-After": "7"})
    api.fail_next(503, {"error": {"message": "The server is overloaded", "type": "server_error"}})
    api.fail_next(400, {"error": {"message": "Invalid 'size'", "type": "invalid_request_error", "param": "size"}})
    outcomes = []
    for _ in range(3):
        with pytest.raises(ServiceError) as caught:
            await openai.submit(generation_context(dalle, {"prompt": "a fox"}))
        outcomes.append((caught.value.code, caught.value.retryable, caught.value.retry_after))
    assert outcomes == [("rate_limited", True, 7.0), ("server_error", True, None), ("rejected", False, None)]
    info = ServiceError("x", retryable=True, retry_after=7.0).info()
    assert info.retry_after_seconds == 7.0


async def test_a_bad_value_is_refused_by_the_api_with_its_own_words(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    gen = generation_context(tool(registry, "openai.dall-e-3"), {"prompt": "x" * 4001})
    with pytest.raises(ServiceError) as caught:
        await openai.submit(gen)
    assert caught.value.code == "rejected" and not caught.value.retryable
    assert "'prompt' is too long: maximum 4000 characters for dall-e-3" in caught.value.message


async def test_credentials_never_reach_a_message_even_when_the_api_echoes_them(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    api.fail_next(401, {"error": {"message": f"Incorrect API key provided: {TOKEN}.", "code": "invalid_api_key"}})
    with pytest.raises(ServiceError) as caught:
        await openai.submit(generation_context(tool(registry, "openai.dall-e-3"), {"prompt": "a fox"}))
    assert caught.value.code == "unauthorized" and not caught.value.retryable
    assert TOKEN not in caught.value.message and "***" in caught.value.message


async def test_a_crash_after_sending_is_not_paid_twice(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    gen = generation_context(tool(registry, "openai.dall-e-3"), {"prompt": "a fox"}, recovering=True)
    with pytest.raises(ServiceError) as caught:
        await openai.submit(gen)
    assert caught.value.code == "unknown_outcome" and not caught.value.retryable
    assert api.requests == []


async def test_prompt_enhancement_costs_what_the_usage_says(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    gen = generation_context(tool(registry, "openai.chat.enhance-prompt"), {"idea": "a fox in the snow"})
    update = (await openai.submit(gen)).update
    assert update is not None and update.status is GenerationStatus.COMPLETED, update and update.error
    sent = api.requests[0].json
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0.7
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][1] == {"role": "user", "content": "a fox in the snow"}
    assert (update.outputs or {})["prompt"].startswith("a fox in the snow, golden hour")
    # 20 prompt tokens at $0.15 per million and 24 completion tokens at $0.60 per million.
    assert update.cost_usd == Decimal(20) * Decimal("0.15") / 10**6 + Decimal(24) * Decimal("0.60") / 10**6


async def test_a_chat_refusal_is_moderation_not_an_empty_answer(
    openai: HttpService, registry: Registry, api: FakeOpenAI
) -> None:
    gen = generation_context(tool(registry, "openai.chat.enhance-prompt"), {"idea": "FORBIDDEN things"})
    update = (await openai.submit(gen)).update  # a 200 that refuses: a failure the API took (and billed)
    assert update is not None and update.status is GenerationStatus.FAILED and update.error is not None
    error = update.error
    assert error.code == "moderation" and not error.retryable
    assert "refused on content grounds (moderation): I'm sorry, I can't help with that." in error.message
    assert error.details == {"httpStatus": 200, "maybePaid": True}


async def test_vision_captioning_sends_the_image_inline(
    openai: HttpService, registry: Registry, api: FakeOpenAI, host: FakeHost
) -> None:
    image = host.put_bytes(png((9, 9, 9), (37, 21)), "image/png", "p.png")
    gen = generation_context(tool(registry, "openai.vision.caption"), {"image": image})
    update = (await openai.submit(gen)).update
    assert update is not None and update.status is GenerationStatus.COMPLETED, update and update.error
    parts = api.requests[0].json["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "Describe this image in one sentence for its alt text."}
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == host.read(image)
    # The fake looked at the image: the caption knows its size.
    assert "37 by 21 pixels" in (update.outputs or {})["caption"]


async def test_a_model_without_vision_is_refused_by_the_api(
    openai: HttpService, registry: Registry, api: FakeOpenAI, host: FakeHost
) -> None:
    image = host.put_bytes(png(), "image/png", "p.png")
    gen = generation_context(tool(registry, "openai.vision.caption"), {"image": image, "model": "gpt-3.5-turbo"})
    with pytest.raises(ServiceError) as caught:
        await openai.submit(gen)
    assert "image_url is only supported by certain models" in caught.value.message
    assert not caught.value.retryable


async def test_any_openai_compatible_server_by_its_base_url(tmp_path: Path, api: FakeOpenAI, host: FakeHost) -> None:
    """A local server without a key: a service of its own, the same tool definition, no credentials."""
    import yaml

    settings = Settings(home=tmp_path, services={"local-llm": {"kind": "http", "base_url": f"{api.base_url}/v1"}})
    catalog = ServiceCatalog(settings, env={}, plugins=[])
    data = yaml.safe_load((PRESETS / "openai-chat-enhance-prompt.yaml").read_text())
    local = ToolDefinition.model_validate({**data, "service": "local-llm"})
    assert catalog.check_tool(local) == []
    service = catalog.build(host)["local-llm"]
    api.authorised = lambda request: "authorization" not in request.headers  # type: ignore[method-assign]
    update = (await service.submit(generation_context(local, {"idea": "a cat"}))).update
    assert update is not None and update.status is GenerationStatus.COMPLETED, update and update.error
    assert api.requests[0].path == "/v1/chat/completions"


async def test_credentials_go_only_to_the_services_own_host(
    openai: HttpService, api: FakeOpenAI, host: FakeHost
) -> None:
    """A request whose URL an input can steer elsewhere does not take the service's key along."""
    leaky = ToolDefinition.model_validate({
        "toolId": "leaky", "service": "openai",
        "inputSchema": {"where": {"type": "string", "required": True}},
        "outputSchema": {"text": {"type": "text"}},
        "metadata": {"http": {"request": {"url": "{{ where }}", "json": {}}}},
    })
    with pytest.raises(ServiceError) as caught:
        await openai.submit(generation_context(leaky, {"where": "http://evil.example/collect"}))
    assert caught.value.code == "bad_definition" and "credentials are not sent elsewhere" in caught.value.message
    assert api.requests == []
