"""A ComfyUI server (or what stands in front of it) that answers an output file badly: a page
that is not the image the tool declares (a proxy's HTML error page with HTTP 200), or a body far
larger than ``media_max_bytes``. The generation fails naming the output, nothing that is not an
image is stored as one, and a huge body is not read to its end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from tests.fakes.comfyui_server import Case, FakeComfyUI
from tests.fakes.host import FakeHost
from tests.integration.test_comfyui_service import gen_for, invert_tool

from toolweave.model.status import GenerationStatus
from toolweave.services.base import ServiceError
from toolweave.services.comfyui import ComfyUIService
from toolweave.settings import ComfyServer, Settings

HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
CHUNK = 64 * 1024
HUGE_CHUNKS = 1024  # 64 MiB


class _BadView(FakeComfyUI):
    """Serves ``/view`` as ``mode`` says: ``html`` (an error page, HTTP 200, image/png claimed or
    not), ``huge`` (an endless-looking PNG), else as the real server."""

    def __init__(self) -> None:
        self.mode = ""
        self.sent = 0
        super().__init__()

    async def view(self, request: Request) -> Response:
        if self.mode == "html":
            return Response(HTML, media_type="text/html")
        if self.mode == "html-as-png":
            return Response(HTML, media_type="image/png")
        if self.mode == "drip":  # a byte at a time, each well within the read timeout, for ever
            async def drip() -> AsyncIterator[bytes]:
                yield b"\x89PNG\r\n\x1a\n"
                for _ in range(10_000):
                    self.sent += 1
                    yield b"\x00"
                    await asyncio.sleep(0.05)
            return StreamingResponse(drip(), media_type="image/png")
        if self.mode == "huge":
            async def body() -> AsyncIterator[bytes]:
                yield b"\x89PNG\r\n\x1a\n" + b"\x00" * (CHUNK - 8)
                for _ in range(HUGE_CHUNKS - 1):
                    self.sent += CHUNK
                    yield b"\x00" * CHUNK
                    await asyncio.sleep(0)
            return StreamingResponse(body(), media_type="image/png")
        return await super().view(request)


@pytest.fixture
async def fake() -> AsyncIterator[_BadView]:
    server = _BadView()
    await server.start()
    yield server
    await server.stop()


def _service(fake: FakeComfyUI, host: FakeHost, tmp_path: Path, **settings: object) -> ComfyUIService:
    chosen: dict[str, object] = {"http_timeout_seconds": 5.0, **settings}
    return ComfyUIService(host, Settings(home=tmp_path, comfyui_servers=[ComfyServer("local", fake.base_url, 2)],
                                         **chosen))  # type: ignore[arg-type]


async def _finished_by_poll(service: ComfyUIService, fake: FakeComfyUI) -> object:
    fake.script(Case.success(hold=True))
    gen = gen_for(invert_tool())
    await service.submit(gen)
    await fake.wait_running(gen.generation_id)
    service._untrack(gen.generation_id)  # only polling follows it: the test reads its answer
    fake.release()
    while gen.generation_id not in fake.history:
        await asyncio.sleep(0.01)
    return await service.poll(gen)


@pytest.mark.parametrize("mode", ["html", "html-as-png"])
async def test_an_output_that_is_not_an_image_fails_naming_the_output(
    fake: _BadView, host: FakeHost, tmp_path: Path, mode: str
) -> None:
    fake.mode = mode
    service = _service(fake, host, tmp_path)
    try:
        update = await _finished_by_poll(service, fake)
    finally:
        await service.close()
    assert update.status is GenerationStatus.FAILED, update.outputs  # type: ignore[attr-defined]
    error = update.error  # type: ignore[attr-defined]
    assert error is not None and error.code == "bad_output" and "not an image" in error.message, error
    assert "'image'" in error.message and error.node == "3"
    assert not list((tmp_path / "artifacts").rglob("*")) or all(  # nothing stored of the page
        HTML not in p.read_bytes() for p in (tmp_path / "artifacts").rglob("*") if p.is_file())


async def test_an_output_larger_than_media_max_bytes_is_not_read_to_its_end(
    fake: _BadView, host: FakeHost, tmp_path: Path
) -> None:
    fake.mode = "huge"
    service = _service(fake, host, tmp_path, media_max_bytes=CHUNK * 4)
    try:
        update = await _finished_by_poll(service, fake)
    finally:
        await service.close()
    assert update.status is GenerationStatus.FAILED  # type: ignore[attr-defined]
    error = update.error  # type: ignore[attr-defined]
    assert error is not None and error.code == "too_large" and str(CHUNK * 4) in error.message, error
    assert fake.sent < CHUNK * HUGE_CHUNKS // 2  # it stopped reading: the server could not send it all


class _AcceptsThenFails(FakeComfyUI):
    """``POST /prompt`` queues the prompt, then whatever stands in front of the server answers
    504 with an HTML page (a proxy that gave up waiting) — the prompt runs all the same."""

    async def post_prompt(self, request: Request) -> Response:
        await super().post_prompt(request)
        return Response(b"<html><body>504 Gateway Time-out</body></html>", status_code=504, media_type="text/html")


async def test_a_prompt_accepted_behind_a_failed_answer_is_followed_not_failed(
    host: FakeHost, tmp_path: Path
) -> None:
    fake = _AcceptsThenFails()
    await fake.start()
    service = _service(fake, host, tmp_path)
    try:
        gen = gen_for(invert_tool(), {"color": 255})
        submission = await service.submit(gen)  # not a failure: the prompt is on the server
        assert submission.platform_run_id == gen.generation_id
        final = await host.wait_for(gen.generation_id, lambda u: u.status.terminal)
        assert final.status is GenerationStatus.COMPLETED, final.error
        assert len(fake.posted_prompts()) == 1
    finally:
        await service.close()
        await fake.stop()


class _FinishesBetweenReads(FakeComfyUI):
    """The prompt ends between a client's read of its history and its read of the queue: the
    history answers ``{}`` once (it was still running), the queue no longer has it."""

    def __init__(self) -> None:
        self.stale_once: set[str] = set()
        super().__init__()

    async def get_history_one(self, request: Request) -> Response:
        prompt_id = request.path_params["prompt_id"]
        if prompt_id in self.stale_once:
            self.stale_once.discard(prompt_id)
            return Response(b"{}", media_type="application/json")
        return await super().get_history_one(request)


async def test_recovery_finds_a_prompt_that_ended_between_its_two_reads(host: FakeHost, tmp_path: Path) -> None:
    fake = _FinishesBetweenReads()
    await fake.start()
    service = _service(fake, host, tmp_path)
    try:
        gen = gen_for(invert_tool(), {"color": 255})
        await service.submit(gen)
        await host.wait_for(gen.generation_id, lambda u: u.status.terminal)
        fake.stale_once.add(gen.generation_id)
        again = gen_for(invert_tool(), {"color": 255}, generation_id=gen.generation_id, recovering=True)
        found = await service.submit(again)  # as after a crash between the mark and the answer
        assert found.update is not None and found.update.status is GenerationStatus.COMPLETED
        assert len(fake.posted_prompts()) == 1  # not sent (and paid for) a second time
    finally:
        await service.close()
        await fake.stop()


async def test_a_websocket_frame_over_the_limit_drops_the_connection_not_the_worker(
    fake: _BadView, host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame larger than any message or preview ComfyUI sends (here 2 MiB against a limit
    lowered to 1 MiB; 64 MiB in life) is not read into memory: the listener drops the connection,
    connects again, and the prompt is still followed to its end."""
    from toolweave.services import comfyui_stream

    monkeypatch.setattr(comfyui_stream, "MAX_FRAME_BYTES", 2**20, raising=False)
    service = _service(fake, host, tmp_path)
    try:
        fake.script(Case.success(hold=True))
        gen = gen_for(invert_tool(), {"color": 255})
        await service.submit(gen)
        await fake.wait_running(gen.generation_id)
        assert fake.ws_connects == 1
        await fake._send_binary(service.client_id, b"\x00\x00\x00\x01\x00\x00\x00\x02" + b"\x00" * (2 * 2**20))
        for _ in range(500):
            if fake.ws_connects >= 2 and service.client_id in fake.sockets:
                break
            await asyncio.sleep(0.01)
        assert fake.ws_connects >= 2, "the listener did not drop the oversized frame's connection"
        fake.release()
        final = await host.wait_for(gen.generation_id, lambda u: u.status.terminal)
        assert final.status is GenerationStatus.COMPLETED, final.error
    finally:
        await service.close()


class _EndlessHistory(FakeComfyUI):
    """``GET /history/{id}`` answers a JSON body that does not end (64 MiB of spaces)."""

    def __init__(self) -> None:
        self.sent = 0
        super().__init__()

    async def get_history_one(self, request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"{"
            for _ in range(HUGE_CHUNKS):
                self.sent += CHUNK
                yield b" " * CHUNK
                await asyncio.sleep(0)
        return StreamingResponse(body(), media_type="application/json")


async def test_an_api_answer_that_does_not_end_is_not_read_to_its_end(
    host: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolweave.services import comfyui

    monkeypatch.setattr(comfyui, "MAX_ANSWER_BYTES", CHUNK * 4, raising=False)
    fake = _EndlessHistory()
    await fake.start()
    service = _service(fake, host, tmp_path)
    try:
        gen = gen_for(invert_tool(), {"color": 255}, platform_run_id="p-1")
        with pytest.raises(ServiceError) as raised:
            await service.poll(gen)
        assert raised.value.code == "too_large" and "GET /history" in raised.value.message
        assert fake.sent < CHUNK * HUGE_CHUNKS // 2
    finally:
        await service.close()
        await fake.stop()


class _NonsenseHistory(FakeComfyUI):
    """``GET /history/{id}`` answers an entry of the wrong shape."""

    def __init__(self, entry: object) -> None:
        self.entry = entry
        super().__init__()

    async def get_history_one(self, request: Request) -> Response:
        import json

        prompt_id = request.path_params["prompt_id"]
        return Response(json.dumps({prompt_id: self.entry}), media_type="application/json")


@pytest.mark.parametrize("entry", [
    {"status": {"messages": None, "status_str": "success"}, "outputs": {}},
    {"status": {"messages": [["execution_error", None]], "status_str": "error"}, "outputs": None},
    {"status": {"messages": "x", "status_str": "success"}, "outputs": {"3": {"images": [{"filename": 7}]}}},
    {"status": None, "outputs": {"3": None}},
])
async def test_a_history_entry_of_the_wrong_shape_fails_clearly(
    host: FakeHost, tmp_path: Path, entry: object
) -> None:
    fake = _NonsenseHistory(entry)
    await fake.start()
    service = _service(fake, host, tmp_path)
    try:
        gen = gen_for(invert_tool(), {"color": 255}, platform_run_id="p-1")
        update = await service.poll(gen)  # an answer, not an exception of Python's
        assert update.status is GenerationStatus.FAILED, update
        assert update.error is not None and update.error.message, update.error
    finally:
        await service.close()
        await fake.stop()


async def test_json_nested_deeper_than_python_reads_is_a_bad_response(host: FakeHost, tmp_path: Path) -> None:
    """``json.loads`` raises ``RecursionError`` (not ``ValueError``) on deep nesting."""

    class _Deep(_NonsenseHistory):
        async def get_history_one(self, request: Request) -> Response:
            return Response(b"[" * 100_000, media_type="application/json")

    fake = _Deep(None)
    await fake.start()
    service = _service(fake, host, tmp_path)
    try:
        with pytest.raises(ServiceError) as raised:
            await service.poll(gen_for(invert_tool(), {"color": 255}, platform_run_id="p-1"))
        assert raised.value.code == "bad_response" and "not JSON" in raised.value.message
    finally:
        await service.close()
        await fake.stop()


async def test_an_output_file_dripped_without_end_is_given_up(
    fake: _BadView, host: FakeHost, tmp_path: Path
) -> None:
    fake.mode = "drip"
    service = _service(fake, host, tmp_path, http_timeout_seconds=0.3)  # each read within it; 3 s in all
    try:
        fake.script(Case.success(hold=True))
        gen = gen_for(invert_tool())
        await service.submit(gen)
        await fake.wait_running(gen.generation_id)
        service._untrack(gen.generation_id)
        fake.release()
        while gen.generation_id not in fake.history:
            await asyncio.sleep(0.01)
        with pytest.raises(ServiceError) as raised:  # retryable: the poll tries again until its deadline
            await service.poll(gen)
        assert raised.value.code == "timeout" and raised.value.retryable and "did not finish sending" in raised.value.message
    finally:
        await service.close()
