"""What services get from the engine (the ``ServiceHost`` protocol): the artifact store, the HTTP
client, progress reports, media inputs read from artifacts, ``data:`` URIs and public URLs, and
URLs a backend can fetch an artifact from."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

from toolweave.artifacts import decode_data_uri
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.netguard import ForbiddenURL, TooManyRedirects, UnresolvableHost, stream_public
from toolweave.services.base import ServiceError

if TYPE_CHECKING:
    from toolweave.app import App


class MediaError(ValueError):
    """A media input that could not be read (a file, a data: URI or an artifact id)."""


def decode_media_data_uri(text: str, limit: int) -> tuple[bytes, str]:
    """The bytes and MIME type of a ``data:`` URI of at most ``limit`` bytes; MediaError otherwise."""
    try:
        return decode_data_uri(text, limit)
    except ValueError as exc:
        raise MediaError(f"the data: URI {exc}") from None


class EngineHost:
    """What services get from the engine (the ``ServiceHost`` protocol)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.artifacts = app.artifacts
        self.http = app.http

    async def report(self, generation_id: str, update: RunUpdate) -> None:
        await self._app.apply_update(generation_id, update)

    async def load_media(self, value: Any) -> tuple[bytes, str]:
        ref = ArtifactRef.from_value(value)
        if ref is not None:
            return await asyncio.to_thread(self.artifacts.read, ref), ref.mime_type
        text = str(value)
        if text.startswith("data:"):
            return decode_media_data_uri(text, self._app.settings.media_max_bytes)
        if text.startswith(("http://", "https://")):
            return await self._fetch(text)
        raise MediaError(f"cannot read media from {text[:80]!r}")

    async def _fetch(self, url: str) -> tuple[bytes, str]:
        """GET a media URL a user gave: public hosts only (unless allowed), every redirect checked,
        at most ``media_max_bytes``."""
        settings = self._app.settings
        try:
            async with stream_public(self.http, url, allow_private=settings.media_allow_private_urls) as response:
                response.raise_for_status()
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > settings.media_max_bytes:
                        raise MediaError(f"{url} is larger than {settings.media_max_bytes} bytes")
                    chunks.append(chunk)
                mime = response.headers.get("content-type", "application/octet-stream").split(";")[0]
                return b"".join(chunks), mime
        except TooManyRedirects as exc:
            raise MediaError(f"{url}: {exc}") from None
        except ForbiddenURL as exc:
            raise MediaError(str(exc)) from None
        except UnresolvableHost as exc:
            raise ServiceError(str(exc), retryable=True, code="network") from exc

    def media_url(self, ref: ArtifactRef) -> str:
        base = self._app.settings.public_base_url
        if base:
            token = self._app.engine.webhook_token("artifact", ref.sha256)
            return f"{base.rstrip('/')}/media/{ref.sha256}?token={token}"
        data = self.artifacts.read(ref)
        return f"data:{ref.mime_type};base64,{base64.b64encode(data).decode()}"
