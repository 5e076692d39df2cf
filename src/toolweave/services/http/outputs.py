"""Reading a declared output out of an API's answer: scalars in their declared type, media
fetched or decoded, checked to be what the output says, and stored as artifacts."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from toolweave.artifacts import decode_data_uri, media_problem, sniff_mime
from toolweave.model.definitions import OutputParam
from toolweave.services.base import ServiceError, ServiceHost
from toolweave.services.http.call import Body, Endpoint, coerce_scalar
from toolweave.services.http.spec import OutputSpec

DOWNLOAD_ATTEMPTS = 3


async def read_output(
    param: OutputParam, value: Any, spec: OutputSpec, body: Body, host: ServiceHost, endpoint: Endpoint,
    media_max_bytes: int,
) -> Any:
    """One declared output's value from an answer: a scalar in its declared type, or media (a URL
    downloaded, a data: URI or base64 decoded) checked to be of its type and stored as an artifact."""
    if not param.type.is_media:
        return coerce_scalar(param.type, value, param.name)
    if isinstance(value, list):
        return [await _media(param, item, spec, body, host, endpoint, media_max_bytes) for item in value]
    return await _media(param, value, spec, body, host, endpoint, media_max_bytes)


async def _media(
    param: OutputParam, value: Any, spec: OutputSpec, body: Body, host: ServiceHost, endpoint: Endpoint,
    media_max_bytes: int,
) -> dict[str, Any]:
    name = param.name
    mime = spec.mime_type
    filename = None
    if isinstance(value, Mapping):  # {url, content_type, file_name} (fal), {url} …
        mime = mime or value.get("content_type") or value.get("mimeType")
        filename = value.get("file_name") or value.get("filename")
        value = value.get("url") or value.get("b64_json") or value.get("data")
    if isinstance(value, bytes):
        data, mime = value, mime or body.mime
    elif isinstance(value, str) and value.startswith(("http://", "https://")):
        data, fetched_mime = await _download(value, name, host, endpoint)
        mime = mime or fetched_mime
    elif isinstance(value, str) and value.startswith("data:"):
        try:
            data, mime = decode_data_uri(value, media_max_bytes)
        except ValueError as exc:
            raise ServiceError(f"output {name!r}: the data: URI {exc}", code="bad_response") from None
    elif isinstance(value, str):
        import base64
        import binascii

        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ServiceError(f"output {name!r} is neither a URL nor base64 media", code="bad_response") from None
    else:
        raise ServiceError(f"output {name!r} should be media, the API gave {type(value).__name__}", code="bad_response")
    if len(data) > media_max_bytes:
        raise ServiceError(f"output {name!r} is larger than media_max_bytes", code="too_large")
    if mime in (None, "", "application/octet-stream", "binary/octet-stream"):
        mime = sniff_mime(data, filename)
    problem = media_problem(param.type.value, data)
    if problem:
        raise ServiceError(f"output {name!r} {problem}", code="bad_response")
    ref = await asyncio.to_thread(host.artifacts.put_bytes, data, mime, filename)
    return ref.as_value()


async def _download(url: str, name: str, host: ServiceHost, endpoint: Endpoint) -> tuple[bytes, str]:
    """An output URL fetched like a user's URL: public hosts only (unless media_allow_private_urls),
    every redirect checked, at most media_max_bytes; tried three times on network trouble."""
    import httpx

    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            return await host.load_media(url)
        except ServiceError as exc:
            if not exc.retryable or attempt == DOWNLOAD_ATTEMPTS:
                raise ServiceError(f"output {name!r} could not be downloaded: {exc.message}",
                                   retryable=exc.retryable, code="download_failed") from None
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status < 500 or attempt == DOWNLOAD_ATTEMPTS:
                raise ServiceError(f"output {name!r} could not be downloaded (HTTP {status})",
                                   retryable=status >= 500, code="download_failed") from None
        except httpx.HTTPError as exc:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise ServiceError(f"output {name!r} could not be downloaded: {type(exc).__name__}",
                                   retryable=True, code="download_failed") from None
        except ValueError as exc:  # a URL the guard refuses, a file too large
            raise ServiceError(f"output {name!r} was not downloaded: {endpoint.scrub(str(exc))}",
                               code="download_refused") from None
        await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover
