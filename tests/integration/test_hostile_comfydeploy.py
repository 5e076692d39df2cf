"""ComfyUI Deploy's output rows point at storage that answers badly: an HTML page (HTTP 200) for
an image output, or a body far larger than ``media_max_bytes``. The generation fails naming the
output; nothing that is not an image is stored as one; a huge body is not read to its end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from tests.fakes.comfydeploy_server import FakeComfyDeploy
from tests.fakes.host import FakeHost
from tests.fakes.server import LoopbackServer
from tests.integration.test_comfydeploy_service import API_KEY, deploy_tool, gen_for, submitted

from toolweave.model.status import GenerationStatus
from toolweave.services.base import ServiceError, WebhookRejected
from toolweave.services.comfydeploy import ComfyDeployService
from toolweave.settings import Settings

HTML = b"<!DOCTYPE html><html><body><h1>AccessDenied</h1></body></html>"
CHUNK = 64 * 1024
HUGE_CHUNKS = 1024  # 64 MiB


class _Storage:
    def __init__(self) -> None:
        self.sent = 0
        self.asked: list[str] = []
        self.server = LoopbackServer(Starlette(routes=[Route("/{what}", self.serve)]))

    async def serve(self, request: Request) -> Response:
        what = request.path_params["what"]
        self.asked.append(what)
        if what == "page.png":
            return Response(HTML, media_type="image/png")
        if what == "drip.png":  # a byte at a time, each within the read timeout, for ever
            async def drip() -> AsyncIterator[bytes]:
                yield b"\x89PNG\r\n\x1a\n"
                for _ in range(10_000):
                    yield b"\x00"
                    await asyncio.sleep(0.05)
            return StreamingResponse(drip(), media_type="image/png")
        if what == "huge.png":
            async def body() -> AsyncIterator[bytes]:
                yield b"\x89PNG\r\n\x1a\n" + b"\x00" * (CHUNK - 8)
                for _ in range(HUGE_CHUNKS - 1):
                    self.sent += CHUNK
                    yield b"\x00" * CHUNK
                    await asyncio.sleep(0)
            return StreamingResponse(body(), media_type="image/png")
        return Response(status_code=404)


@pytest.fixture
async def storage() -> AsyncIterator[_Storage]:
    s = _Storage()
    await s.server.start()
    yield s
    await s.server.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyDeploy]:
    server = await FakeComfyDeploy(api_key=API_KEY).start()
    yield server
    await server.stop()


async def _finish_pointing_at(
    fake: FakeComfyDeploy, host: FakeHost, tmp_path: Path, url: str, timeout: float = 5.0, private: bool = True
) -> object:
    service = ComfyDeployService(host, Settings(
        home=tmp_path, comfydeploy_api_key=API_KEY, comfydeploy_base_url=fake.api_url, http_timeout_seconds=timeout,
        media_max_bytes=CHUNK * 4, media_allow_private_urls=private))
    gen = await submitted(service, gen_for(deploy_tool()))
    assert gen.platform_run_id is not None
    fake.finish(gen.platform_run_id)
    body = fake.webhook_body(gen.platform_run_id)
    body["outputs"][0]["data"]["images"][0]["url"] = url
    parsed = service.parse_webhook({}, json.dumps(body).encode())
    return await service.finalize(gen, parsed.update)


async def test_an_output_that_is_not_an_image_fails_naming_the_output(
    fake: FakeComfyDeploy, host: FakeHost, storage: _Storage, tmp_path: Path
) -> None:
    final = await _finish_pointing_at(fake, host, tmp_path, storage.server.base_url + "/page.png")
    assert final.status is GenerationStatus.FAILED, final.outputs  # type: ignore[attr-defined]
    error = final.error  # type: ignore[attr-defined]
    assert error is not None and error.code == "bad_output" and "'image'" in error.message
    assert "not an image" in error.message


async def test_an_output_larger_than_media_max_bytes_is_not_read_to_its_end(
    fake: FakeComfyDeploy, host: FakeHost, storage: _Storage, tmp_path: Path
) -> None:
    try:
        final = await _finish_pointing_at(fake, host, tmp_path, storage.server.base_url + "/huge.png")
    except ServiceError as exc:  # (a retryable failure would poll again for ever)
        raise AssertionError(f"raised {exc.info()}") from None
    assert final.status is GenerationStatus.FAILED  # type: ignore[attr-defined]
    error = final.error  # type: ignore[attr-defined]
    assert error is not None and error.code == "too_large" and str(CHUNK * 4) in error.message, error
    assert storage.sent < CHUNK * HUGE_CHUNKS // 2


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), -12.5, 1e300])
async def test_a_run_duration_that_is_nonsense_prices_nothing_and_keeps_the_outputs(
    fake: FakeComfyDeploy, host: FakeHost, tmp_path: Path, seconds: float
) -> None:
    service = ComfyDeployService(host, Settings(
        home=tmp_path, comfydeploy_api_key=API_KEY, comfydeploy_base_url=fake.api_url, http_timeout_seconds=5.0,
        media_allow_private_urls=True))
    gen = await submitted(service, gen_for(deploy_tool()))
    assert gen.platform_run_id is not None
    fake.finish(gen.platform_run_id)
    body = {**fake.webhook_body(gen.platform_run_id), "run_duration": seconds, "gpu": "T4"}
    parsed = service.parse_webhook({}, json.dumps(body).encode())  # (Python's json writes and reads Infinity, NaN)
    final = await service.finalize(gen, parsed.update)
    assert final.status is GenerationStatus.COMPLETED and final.outputs, final.error
    assert final.cost_usd is None  # no price from a duration that cannot be one


class _RateLimited(FakeComfyDeploy):
    """Answers 429 as its API gateway does, with ``Retry-After`` or without."""

    def __init__(self, retry_after: str | None) -> None:
        self.retry_after = retry_after
        super().__init__(api_key=API_KEY)

    async def queue(self, request: Request) -> Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
        return Response(b'{"detail": "Too many requests"}', status_code=429, media_type="application/json",
                        headers=headers)

    async def get_run(self, request: Request) -> Response:
        return await self.queue(request)


@pytest.mark.parametrize(("header", "seconds"), [
    ("37", 37.0), (None, None), ("inf", None), ("nan", None), ("soon", None), ("-5", 0.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by: now
])
async def test_a_429_is_a_rate_limit_with_the_backends_retry_after(
    host: FakeHost, tmp_path: Path, header: str | None, seconds: float | None
) -> None:
    limited = await _RateLimited(header).start()
    try:
        service = ComfyDeployService(host, Settings(
            home=tmp_path, comfydeploy_api_key=API_KEY, comfydeploy_base_url=limited.api_url, http_timeout_seconds=5.0))
        for call in ("submit", "poll"):
            gen = gen_for(deploy_tool(), {"prompt": "owl"})
            with pytest.raises(ServiceError) as raised:
                if call == "submit":
                    await service.submit(gen)
                else:
                    await service.poll(dataclasses.replace(gen, platform_run_id="0b5a7c1e-0000-4000-8000-00000000beef"))
            info = raised.value.info()
            assert info.retryable and info.code == "rate_limited", info
            assert info.retry_after_seconds == seconds, info
            assert "Too many requests" in info.message
    finally:
        await limited.stop()


async def test_an_output_dripped_without_end_is_given_up(
    fake: FakeComfyDeploy, host: FakeHost, storage: _Storage, tmp_path: Path
) -> None:
    with pytest.raises(ServiceError) as raised:  # retryable: the engine polls again, until the deadline
        await _finish_pointing_at(fake, host, tmp_path, storage.server.base_url + "/drip.png", timeout=0.3)
    assert raised.value.retryable and "not downloaded within 3 s" in raised.value.message, raised.value.info()


async def test_an_output_url_on_a_private_address_is_not_fetched(
    fake: FakeComfyDeploy, host: FakeHost, storage: _Storage, tmp_path: Path
) -> None:
    """Output URLs are the backend's word: one naming the server's own network (here loopback; in
    life a cloud metadata address) is refused as a user's media URL is, unless
    ``media_allow_private_urls`` says otherwise — else its answer would become the account's
    artifact."""
    final = await _finish_pointing_at(fake, host, tmp_path, storage.server.base_url + "/page.png", private=False)
    assert final.status is GenerationStatus.FAILED  # type: ignore[attr-defined]
    error = final.error  # type: ignore[attr-defined]
    assert error is not None and error.code == "download_refused" and "MEDIA_ALLOW_PRIVATE_URLS" in error.message
    assert storage.asked == []


@pytest.mark.parametrize("status", [["success"], {"s": 1}, 7, None])
async def test_a_status_that_is_not_text_is_a_rejected_webhook_and_a_bad_poll(
    fake: FakeComfyDeploy, host: FakeHost, tmp_path: Path, status: object
) -> None:
    service = ComfyDeployService(host, Settings(
        home=tmp_path, comfydeploy_api_key=API_KEY, comfydeploy_base_url=fake.api_url, http_timeout_seconds=5.0))
    body = {"run_id": "0b5a7c1e-0000-4000-8000-000000000001", "status": status}
    with pytest.raises(WebhookRejected, match="unknown status"):  # a 400 to the sender, not a 500
        service.parse_webhook({}, json.dumps(body).encode())


class _NoRunId(FakeComfyDeploy):
    """Takes the run (200) and answers without a usable ``run_id``: a proxy's page, an empty body."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        super().__init__(api_key=API_KEY)

    async def queue(self, request: Request) -> Response:
        self.calls.append(("POST", "/run/deployment/queue", None))
        return Response(self.body, media_type="application/json")


@pytest.mark.parametrize("body", [HTML, b'{"ok": true}', b"", b'{"run_id": ""}'])
async def test_a_queued_run_without_a_run_id_is_not_queued_again(host: FakeHost, tmp_path: Path, body: bytes) -> None:
    taken = await _NoRunId(body).start()
    try:
        service = ComfyDeployService(host, Settings(
            home=tmp_path, comfydeploy_api_key=API_KEY, comfydeploy_base_url=taken.api_url, http_timeout_seconds=5.0))
        with pytest.raises(ServiceError) as raised:
            await service.submit(gen_for(deploy_tool(), {"prompt": "owl"}))
        info = raised.value.info()
        assert not info.retryable and info.code == "bad_response", info  # a retry would pay for a second run
        assert "not queued again" in info.message and info.details == {"maybePaid": True}
    finally:
        await taken.stop()
