"""What services get from the engine (the ``ServiceHost`` protocol): the artifact store, the HTTP
client, progress reports, media inputs read from artifacts, ``data:`` URIs and public URLs, and
URLs a backend can fetch an artifact from (signed, expiring: ``media_path``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from toolweave.artifacts import decode_data_uri
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.netguard import MEDIA_SETTING, ForbiddenURL, TooManyRedirects, UnresolvableHost, stream_public
from toolweave.services.base import ServiceError, read_at_most

if TYPE_CHECKING:
    import httpx

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
        self.evaluator = app.evaluator

    @property
    def http(self) -> httpx.AsyncClient:
        return self._app.http

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
            async with stream_public(
                self.http, url, allow_private=settings.media_allow_private_urls, setting=MEDIA_SETTING
            ) as response:
                response.raise_for_status()
                data = await read_at_most(response.aiter_bytes(), settings.media_max_bytes,
                                          lambda: MediaError(f"{url} is larger than {settings.media_max_bytes} bytes"))
                mime = response.headers.get("content-type", "application/octet-stream").split(";")[0]
                return data, mime
        except TooManyRedirects as exc:
            raise MediaError(f"{url}: {exc}") from None
        except ForbiddenURL as exc:
            raise MediaError(str(exc)) from None
        except UnresolvableHost as exc:
            raise ServiceError(str(exc), retryable=True, code="network") from exc

    def media_url(self, ref: ArtifactRef) -> str:
        base = self._app.settings.public_base_url
        if base:
            return f"{base.rstrip('/')}{self._app.media_path(ref.sha256, ref.mime_type)}"
        data = self.artifacts.read(ref)
        return f"data:{ref.mime_type};base64,{base64.b64encode(data).decode()}"


def media_signature(secret: bytes, sha256: str, mime_type: str, expires: int) -> str:
    """HMAC-SHA256 over what a media URL serves: the artifact, its content type and the expiry
    (with a purpose tag of its own, so no other token of the server's can stand in for it)."""
    message = f"toolweave-media-url\n{sha256}\n{mime_type}\n{expires}".encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def media_path(secret: bytes, sha256: str, mime_type: str, expires: int) -> str:
    """``/media/<sha256>?type=…&expires=…&token=…``, signed with ``secret``."""
    token = media_signature(secret, sha256, mime_type, expires)
    return f"/media/{sha256}?{urlencode({'type': mime_type, 'expires': expires, 'token': token})}"
