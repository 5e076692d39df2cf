"""media.fetch against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from tests.helpers import LocalHost, generation_context, serve_asgi

from toolweave.services.base import ServiceError
from toolweave.services.builtin import BuiltinService
from toolweave.settings import Settings


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), "teal").save(buf, "PNG")
    return buf.getvalue()


PNG = png_bytes()


async def image(request: Request) -> Response:
    return Response(PNG, media_type="image/png", headers={"content-disposition": 'inline; filename="teal.png"'})


async def octets(request: Request) -> Response:
    return Response(PNG, media_type="application/octet-stream")


async def html(request: Request) -> Response:
    return Response("<html></html>", media_type="text/html")


async def big_stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"\0" * 16384

    return StreamingResponse(chunks(), media_type="image/png")  # no Content-Length


async def slow(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield PNG[:10]
        await asyncio.sleep(30)  # cancelled when the client goes away
        yield PNG[10:]

    return StreamingResponse(chunks(), media_type="image/png")


async def unavailable(request: Request) -> Response:
    return Response("busy", status_code=503)


async def missing(request: Request) -> Response:
    return Response("no", status_code=404)


async def redirect(request: Request) -> RedirectResponse:
    return RedirectResponse("/image.png", status_code=302)


async def loop(request: Request) -> RedirectResponse:
    return RedirectResponse("/loop", status_code=302)


APP = Starlette(routes=[
    Route("/image.png", image),
    Route("/octets", octets),
    Route("/page", html),
    Route("/big", big_stream),
    Route("/slow", slow),
    Route("/busy", unavailable),
    Route("/missing", missing),
    Route("/redirect", redirect),
    Route("/loop", loop),
])


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    async with serve_asgi(APP) as url:
        yield url


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[LocalHost]:
    async with LocalHost(tmp_path) as h:
        yield h


def service_for(host: LocalHost, tmp_path: Path, **settings: Any) -> BuiltinService:
    options: dict[str, Any] = {"media_allow_private_urls": True, **settings}
    return BuiltinService(host, settings=Settings(home=tmp_path / "home", **options))


async def fetch(service: BuiltinService, **inputs: Any) -> dict[str, Any]:
    sub = await service.submit(generation_context(service.tool("media.fetch").definition, inputs))
    assert sub.update is not None and sub.update.outputs is not None
    return sub.update.outputs


async def test_fetches_an_image_into_an_artifact(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    out = await fetch(service_for(host, tmp_path), source=f"{base_url}/image.png")
    assert out["mime_type"] == "image/png" and out["size"] == len(PNG) and out["filename"] == "teal.png"
    assert out["file"]["width"] == 32 and out["file"]["height"] == 16
    assert host.read(out["file"]) == PNG


async def test_follows_redirects_and_sniffs_octet_streams(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    service = service_for(host, tmp_path)
    out = await fetch(service, source=f"{base_url}/redirect")
    assert host.read(out["file"]) == PNG
    out = await fetch(service, source=f"{base_url}/octets")
    assert out["mime_type"] == "image/png"
    with pytest.raises(ServiceError) as err:
        await fetch(service, source=f"{base_url}/loop")
    assert err.value.code == "too_many_redirects"


async def test_size_limit_from_header_and_while_streaming(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    service = service_for(host, tmp_path)
    with pytest.raises(ServiceError) as err:
        await fetch(service, source=f"{base_url}/image.png", max_bytes=len(PNG) - 1)
    assert err.value.code == "too_large" and not err.value.retryable
    small_server = service_for(host, tmp_path, media_max_bytes=100_000)
    with pytest.raises(ServiceError) as err:
        await fetch(small_server, source=f"{base_url}/big")  # 1 MiB streamed, no Content-Length
    assert err.value.code == "too_large" and "100000" in err.value.message
    with pytest.raises(ServiceError) as err:
        await fetch(small_server, source=f"{base_url}/image.png", max_bytes=200_000)
    assert "'max_bytes'" in err.value.message


async def test_content_type_allow_list(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    service = service_for(host, tmp_path)
    with pytest.raises(ServiceError) as err:
        await fetch(service, source=f"{base_url}/page")
    assert err.value.code == "content_type" and "text/html" in err.value.message
    out = await fetch(service, source=f"{base_url}/page", allowed_types=["text/"])
    assert out["mime_type"] == "text/html"
    with pytest.raises(ServiceError):
        await fetch(service, source=f"{base_url}/image.png", allowed_types=["video/"])
    out = await fetch(service, source=f"{base_url}/page", allowed_types=[])
    assert out["size"] == len("<html></html>")


async def test_timeout_is_retryable(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    with pytest.raises(ServiceError) as err:
        await fetch(service_for(host, tmp_path), source=f"{base_url}/slow", timeout_seconds=0.3)
    assert err.value.code == "timeout" and err.value.retryable


async def test_http_errors_are_classified(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    service = service_for(host, tmp_path)
    with pytest.raises(ServiceError) as err:
        await fetch(service, source=f"{base_url}/busy")
    assert err.value.retryable and "503" in err.value.message
    with pytest.raises(ServiceError) as err:
        await fetch(service, source=f"{base_url}/missing")
    assert not err.value.retryable and "404" in err.value.message


async def test_connection_refused_is_retryable(host: LocalHost, tmp_path: Path) -> None:
    async with serve_asgi(APP) as url:
        pass  # the port is free again once the server has stopped
    with pytest.raises(ServiceError) as err:
        await fetch(service_for(host, tmp_path), source=f"{url}/image.png")
    assert err.value.retryable and err.value.code == "network"


async def test_private_addresses_are_refused_by_default(host: LocalHost, tmp_path: Path, base_url: str) -> None:
    service = BuiltinService(host, settings=Settings(home=tmp_path / "home"))
    for source in (f"{base_url}/image.png", "http://localhost/x.png", "http://169.254.169.254/latest",
                   "http://[::1]:1/x", "http://10.1.2.3/x"):
        with pytest.raises(ServiceError) as err:
            await fetch(service, source=source)
        assert err.value.code == "forbidden_address" and not err.value.retryable, source


async def test_data_uris_and_bad_sources(host: LocalHost, tmp_path: Path) -> None:
    service = service_for(host, tmp_path)
    out = await fetch(service, source="data:image/png;base64," + base64.b64encode(PNG).decode())
    assert host.read(out["file"]) == PNG and out["mime_type"] == "image/png"
    for source, code in [("ftp://example.invalid/x", "bad_url"), ("data:image/png;base64,%%%", "bad_url")]:
        with pytest.raises(ServiceError) as err:
            await fetch(service, source=source)
        assert err.value.code == code


async def test_local_paths_only_inside_allowed_roots(host: LocalHost, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "pic.png").write_bytes(PNG)
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    (allowed / "escape.png").symlink_to(secret)
    closed = service_for(host, tmp_path)
    with pytest.raises(ServiceError) as err:
        await fetch(closed, source=str(allowed / "pic.png"))
    assert err.value.code == "forbidden_path"
    service = service_for(host, tmp_path, media_local_roots=[allowed])
    out = await fetch(service, source=str(allowed / "pic.png"))
    assert out["filename"] == "pic.png" and out["mime_type"] == "image/png"
    out = await fetch(service, source=(allowed / "pic.png").as_uri())
    assert host.read(out["file"]) == PNG
    for outside in (secret, allowed / "escape.png", allowed / ".." / "secret.png"):
        with pytest.raises(ServiceError) as err:
            await fetch(service, source=str(outside))
        assert err.value.code == "forbidden_path", outside
    with pytest.raises(ServiceError) as err:
        await fetch(service, source=str(allowed / "nope.png"))
    assert err.value.code == "not_found"


async def sound(request: Request) -> Response:
    return Response(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\0" * 28, media_type="audio/wav")


async def test_a_fetched_file_feeds_an_image_input_and_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    """``media.fetch``'s ``file`` output may be mapped into ``image.resize``'s ``image`` (registration
    accepts file → image); a fetched sound is refused by the step that reads it, not retried."""
    from toolweave.app import App
    from toolweave.model.definitions import JobDefinition

    server = Starlette(routes=[Route("/image.png", image), Route("/sound.wav", sound)])
    app = App(Settings(home=tmp_path / "home", media_allow_private_urls=True))
    try:
        job = JobDefinition.model_validate({
            "jobId": "fetch_and_resize", "inputSchema": {"url": {"type": "string", "required": True}},
            "outputSchema": {"image": {"type": "image", "sourceStepId": "resize", "sourceOutputName": "image"}},
            "steps": [
                {"stepId": "fetch", "toolId": "media.fetch",
                 "inputMappings": [{"sourceJobInput": "url", "targetInputName": "source"}]},
                {"stepId": "resize", "toolId": "image.resize",
                 "inputMappings": [{"sourceStepId": "fetch", "sourceOutputName": "file", "targetInputName": "image"},
                                   {"value": 8, "targetInputName": "width"}]},
            ],
        })
        assert app.registry.register(job) == []
        async with serve_asgi(server) as url:
            good = await app.submit("fetch_and_resize", {"url": f"{url}/image.png"}, account_id="acme")
            bad = await app.submit("fetch_and_resize", {"url": f"{url}/sound.wav"}, account_id="acme")
            await app.make_worker(4).run_until_idle(60)
        done = await app.get_run(good)
        assert done["status"] == "completed" and done["finalOutputs"]["image"]["width"] == 8
        refused = await app.get_run(bad)
        assert refused["status"] == "failed"
        (resize,) = [g for g in refused["generations"] if g["stepId"] == "resize"]
        assert resize["error"]["retryable"] is False and len([g for g in refused["generations"] if g["stepId"] == "resize"]) == 1
    finally:
        await app.aclose()
