"""What the fakes of hosted model APIs share: a loopback server, a record of every request with
its headers, credentials checked, scripted failures (``fail_next``: a 429 with ``Retry-After``, a
500, a 400 …) answered before the real handler, and generated files served under ``/files/``
(as signed storage URLs are).

Each fake (``openai_api``, ``replicate_api``, ``fal_api``, ``hf_api``) is written from the
provider's public API reference and refuses what the provider refuses: a missing or wrong
credential, an unknown parameter, a value out of its documented range, a body of the wrong type.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import LoopbackServer

Handler = Callable[[Request], Awaitable[Response]]


def png(color: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 48), *, padding: int = 0) -> bytes:
    """A PNG of one colour; ``padding`` bytes of text metadata make it as large as a real one."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if padding:
        info.add_text("padding", "x" * padding)
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)
    files: dict[str, list[tuple[str, bytes, str]]] = field(default_factory=dict)
    content: bytes = b""


@dataclass
class Scripted:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    """Only requests to this path (None: any)."""


class FakeAPI:
    """A provider's API on loopback; subclasses give ``routes()`` and the error body shape."""

    auth_scheme = "Bearer"

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[Recorded] = []
        self.scripted: list[Scripted] = []
        self.files: dict[str, tuple[bytes, str]] = {}
        self.downloads = 0
        app = Starlette(routes=[*self.routes(), Route("/files/{name}", self._file, methods=["GET"])])
        self.server = LoopbackServer(app)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FakeAPI:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def routes(self) -> list[Route]:
        raise NotImplementedError

    # --- helpers for handlers ------------------------------------------------------------------

    def error(self, status: int, message: str, **fields: Any) -> Response:
        """The provider's error body (subclasses override)."""
        return JSONResponse({"detail": message, **fields}, status_code=status)

    def fail_next(self, status: int, body: Any, *, headers: dict[str, str] | None = None, times: int = 1,
                  path: str | None = None) -> None:
        self.scripted.extend(Scripted(status, body, dict(headers or {}), path) for _ in range(times))

    async def record(self, request: Request) -> Recorded:
        raw = await request.body()
        recorded = Recorded(request.method, request.url.path, dict(request.headers), dict(request.query_params),
                            content=raw)
        kind = request.headers.get("content-type", "")
        if kind.startswith("application/json") and raw:
            try:
                recorded.json = json.loads(raw)
            except ValueError:
                recorded.json = ValueError("not JSON")
        elif kind.startswith("multipart/form-data"):
            form = await request.form()
            for key, value in form.multi_items():
                if isinstance(value, str):
                    recorded.form.setdefault(key, value)
                else:
                    data = await value.read()
                    recorded.files.setdefault(key, []).append(
                        (value.filename or "", data, value.content_type or "")
                    )
        self.requests.append(recorded)
        return recorded

    def scripted_answer(self, path: str) -> Response | None:
        for index, item in enumerate(self.scripted):
            if item.path is None or item.path == path:
                del self.scripted[index]
                body = item.body if isinstance(item.body, bytes | str) else json.dumps(item.body)
                return Response(body, status_code=item.status, headers=item.headers,
                                media_type="application/json")
        return None

    def authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"{self.auth_scheme} {self.token}"

    async def begin(self, request: Request) -> tuple[Recorded, Response | None]:
        """Record the request; the answer when it ends here (scripted, or no credentials)."""
        recorded = await self.record(request)
        scripted = self.scripted_answer(request.url.path)
        if scripted is not None:
            return recorded, scripted
        if not self.authorised(request):
            return recorded, self.error(401, "Incorrect API key provided", code="invalid_api_key")
        return recorded, None

    def file_url(self, data: bytes, mime: str = "image/png") -> str:
        name = hashlib.sha256(data).hexdigest()[:16] + {"image/png": ".png", "image/webp": ".webp"}.get(mime, ".bin")
        self.files[name] = (data, mime)
        return f"{self.base_url}/files/{name}"

    async def _file(self, request: Request) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404)
        self.downloads += 1
        # Storage URLs are signed; they are not the API and get no credentials.
        assert "authorization" not in request.headers, "credentials were sent to a storage URL"
        return Response(found[0], media_type=found[1])


def sniff_image(data: bytes) -> str | None:
    """The format Pillow finds in some bytes (``PNG``, ``JPEG``, ``WEBP``…), or None."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format)
    except Exception:
        return None


def data_uri_image(uri: str) -> str | None:
    """The image format of a ``data:image/...;base64,`` URI, or None if it is not one."""
    import base64
    import re

    match = re.match(r"^data:(image/[\w.+-]+);base64,(.*)$", uri, re.S)
    if not match:
        return None
    try:
        return sniff_image(base64.b64decode(match.group(2), validate=True))
    except ValueError:
        return None


async def fetch(url: str) -> bytes | None:
    """What a provider does with an image URL it is given: download it (None when it cannot)."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return None
    return response.content if response.status_code == 200 else None
