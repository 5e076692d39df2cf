"""``media.fetch``: bring a URL, a data: URI or a local file into the artifact store.

Safety rules (see docs/builtin-tools.md):

- http(s) is streamed with a total deadline (`timeout_seconds`) and a byte limit enforced while
  reading (the smaller of input `max_bytes` and the server's ``media_max_bytes``); a declared
  ``Content-Length`` over the limit is refused before reading.
- Redirects are followed by hand (at most ``netguard.MAX_REDIRECTS``) so that every hop is checked.
- Hosts that resolve to loopback, private, link-local or otherwise reserved addresses are refused
  unless the server allows them (``media_allow_private_urls``), so a user cannot make the server
  read its own metadata endpoints or internal services. (The address is checked when the request
  is made; a DNS answer that changes between the check and the connection is not caught.)
- Local paths (plain or ``file://``) are refused unless they resolve, symlinks followed, inside one
  of the server's ``media_local_roots``; by default there are none.
- The content type (declared, or sniffed when the server says nothing useful) must start with one
  of the prefixes in `allowed_types` (an empty list allows everything).

Timeouts, network errors and HTTP 408/429/5xx are retryable; everything else is not.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from toolweave.artifacts import DataURITooLarge, decode_data_uri, sniff_mime
from toolweave.files import FileTooLarge, read_resolved_file
from toolweave.model.definitions import InputParam, OutputParam, ParamType, PlatformHints, ToolDefinition
from toolweave.model.records import ArtifactRef
from toolweave.netguard import (
    MEDIA_SETTING,
    ForbiddenURL,
    NotFetchable,
    TooManyRedirects,
    UnresolvableHost,
    stream_public,
)
from toolweave.services.base import ServiceError
from toolweave.services.builtin._common import SERVICE_NAME, BuiltinTool, ToolContext, bad_input, free, store

DEFAULT_ALLOWED = ["image/", "video/", "audio/"]
_CHUNK = 64 * 1024

FETCH = ToolDefinition(
    tool_id="media.fetch",
    service=SERVICE_NAME,
    display_name="Fetch media",
    description="Download an http(s) URL (or read a data: URI, or a local file under the server's "
    "allowed folders) into an artifact, with a size limit, a content-type allow-list and a timeout.",
    input_schema=[
        InputParam(name="source", type=ParamType.STRING, required=True, accepts_url=True, order=0,
                   description="An http(s) URL, a data: URI, an artifact, or a local path / file:// URL "
                   "inside one of the server's media_local_roots."),
        InputParam(name="allowed_types", type=ParamType.JSON, default=list(DEFAULT_ALLOWED), order=1,
                   description="A JSON list of content-type prefixes that are accepted, e.g. "
                   '["image/", "application/pdf"]; [] accepts any type.'),
        InputParam(name="max_bytes", type=ParamType.INTEGER, minimum=1, order=2, advanced=True,
                   description="Refuse anything larger (default and ceiling: the server's media_max_bytes)."),
        InputParam(name="timeout_seconds", type=ParamType.NUMBER, default=30.0, minimum=0.1, maximum=600.0,
                   order=3, advanced=True, description="Total time allowed for the download."),
        InputParam(name="filename", type=ParamType.STRING, order=4, advanced=True,
                   description="The file name to record (default: from the response or the URL)."),
    ],
    output_schema=[
        OutputParam(name="file", type=ParamType.FILE, description="The fetched content as an artifact."),
        OutputParam(name="mime_type", type=ParamType.STRING, description="Its content type."),
        OutputParam(name="size", type=ParamType.INTEGER, description="Its size in bytes."),
        OutputParam(name="filename", type=ParamType.STRING, description="Its file name, if known."),
    ],
    costing_model=free(),
    platform_hints=PlatformHints(primary_input="source", category="url-to-file"),
    metadata={"provider": "builtin"},
    timeout_seconds=660.0,
)


def _allowed(mime: str, prefixes: list[str]) -> bool:
    return not prefixes or any(mime.startswith(p.lower()) for p in prefixes)


def _check_type(mime: str, prefixes: list[str]) -> None:
    if not _allowed(mime, prefixes):
        raise bad_input(
            f"input 'source' has content type {mime!r}, which input 'allowed_types' does not allow "
            f"({', '.join(prefixes)})", code="content_type"
        )


def _too_large(limit: int, size: int | None = None) -> ServiceError:
    got = f" ({size} bytes)" if size is not None else ""
    return bad_input(f"input 'source' is larger than the limit of {limit} bytes{got}", code="too_large")


def _filename_from(url: str, disposition: str | None) -> str | None:
    if disposition:
        m = re.search(r"filename\*=(?:UTF-8'')?([^;]+)|filename=\"?([^\";]+)\"?", disposition, re.I)
        if m:
            name = unquote((m.group(1) or m.group(2)).strip())
            return PurePosixPath(name.replace("\\", "/")).name or None
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name or None


async def _fetch_http(
    ctx: ToolContext, url: str, prefixes: list[str], limit: int, request_seconds: float
) -> tuple[bytes, str, str | None]:
    allow_private = ctx.settings.media_allow_private_urls
    try:
        async with stream_public(ctx.host.http, url, allow_private=allow_private, setting=MEDIA_SETTING,
                                 timeout=request_seconds) as resp:
            status = resp.status_code
            if status >= 400:
                retryable = status >= 500 or status in (408, 425, 429)
                raise ServiceError(f"input 'source': the server answered HTTP {status}", retryable=retryable,
                                   code="http_error", details={"status": status})
            declared = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if declared and declared != "application/octet-stream":
                _check_type(declared, prefixes)
            length = resp.headers.get("content-length")
            if length and length.isdigit() and int(length) > limit:
                raise _too_large(limit, int(length))
            chunks: list[bytes] = []
            total = 0
            async for chunk in resp.aiter_bytes(_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
            data = b"".join(chunks)
            filename = _filename_from(str(resp.url), resp.headers.get("content-disposition"))
            mime = declared if declared and declared != "application/octet-stream" else sniff_mime(data, filename)
            return data, mime, filename
    except TooManyRedirects as exc:
        raise bad_input(f"input 'source': {exc}", code="too_many_redirects") from None
    except NotFetchable as exc:
        raise bad_input(f"input 'source': {exc}", code="bad_url") from None
    except ForbiddenURL as exc:
        raise bad_input(f"input 'source': {exc}", code="forbidden_address") from None
    except UnresolvableHost as exc:
        raise ServiceError(f"input 'source': {exc}", retryable=True, code="network") from exc


def _decode_data_uri(uri: str, limit: int) -> tuple[bytes, str]:
    try:
        return decode_data_uri(uri, limit)
    except DataURITooLarge as exc:
        raise _too_large(limit, exc.size) from None
    except ValueError as exc:
        raise bad_input(f"input 'source' {exc}", code="bad_url") from None


def _read_local(source: str, roots: list[Path], limit: int) -> tuple[bytes, str]:
    raw = unquote(urlsplit(source).path) if source.startswith("file:") else source
    if not roots:
        raise bad_input("input 'source' is a local path, and this server allows no local folders "
                        "(setting media_local_roots)", code="forbidden_path")
    try:
        path = Path(raw).expanduser().resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise bad_input(f"input 'source': no such file {raw!r}", code="not_found") from exc
    if not any(path.is_relative_to(Path(r).expanduser().resolve()) for r in roots):
        raise bad_input(f"input 'source': {raw!r} is outside the allowed folders (media_local_roots)",
                        code="forbidden_path")
    if not path.is_file():
        raise bad_input(f"input 'source': {raw!r} is not a file", code="not_found")
    size = path.stat().st_size
    if size > limit:
        raise _too_large(limit, size)
    try:  # the checked path, opened without following a symlink swapped in since the check
        data = read_resolved_file(path, limit)
    except FileTooLarge:
        raise _too_large(limit) from None
    except OSError as exc:
        raise bad_input(f"input 'source': {raw!r} cannot be read: {exc.strerror or exc}",
                        code="not_found") from None
    return data, path.name


async def run_fetch(ctx: ToolContext) -> dict[str, Any]:
    i = ctx.inputs
    source = i["source"]
    if isinstance(source, str) and source.startswith("artifact:"):
        try:
            source = ctx.host.artifacts.ref(source.removeprefix("artifact:")).as_value()
        except KeyError as exc:
            raise bad_input(f"input 'source': no such artifact {source!r}", code="not_found") from exc
    if ArtifactRef.is_ref(source):  # already an artifact: nothing to fetch
        ref = ArtifactRef.model_validate(source)
        _check_type(ref.mime_type, _prefixes(i["allowed_types"]))
        return {"file": ref.as_value(), "mime_type": ref.mime_type, "size": ref.size, "filename": ref.filename}
    if not isinstance(source, str) or not source.strip():
        raise bad_input("input 'source' must be a URL, a data: URI or a path")
    source = source.strip()
    prefixes = _prefixes(i["allowed_types"])
    ceiling = ctx.settings.media_max_bytes
    limit = i["max_bytes"] or ceiling
    if limit > ceiling:
        raise bad_input(f"input 'max_bytes' ({limit}) is above this server's limit of {ceiling} bytes")
    filename: str | None
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        import httpx  # here, not with the module: every run loads the builtin tools

        try:
            async with asyncio.timeout(i["timeout_seconds"]):
                data, mime, filename = await _fetch_http(ctx, source, prefixes, limit, i["timeout_seconds"])
        except TimeoutError as exc:
            raise ServiceError(f"input 'source': no complete answer within {i['timeout_seconds']:g} seconds",
                               retryable=True, code="timeout") from exc
        except httpx.TimeoutException as exc:
            raise ServiceError("input 'source': the request timed out", retryable=True, code="timeout") from exc
        except httpx.TransportError as exc:
            raise ServiceError(f"input 'source': network error: {exc}", retryable=True, code="network") from exc
        except httpx.InvalidURL as exc:
            raise bad_input(f"input 'source' is not a valid URL: {exc}", code="bad_url") from exc
    elif scheme == "data":
        data, mime = _decode_data_uri(source, limit)
        filename = None
    elif scheme in ("file", "") or (len(scheme) == 1 and os.name == "nt"):
        roots = list(ctx.settings.media_local_roots)
        data, filename = await asyncio.to_thread(_read_local, source, roots, limit)
        mime = sniff_mime(data, filename)
        if mime == "application/octet-stream":
            mime = mimetypes.guess_type(filename or "")[0] or mime
    else:
        raise bad_input(f"input 'source': cannot fetch {scheme!r} URLs (use http, https, data or a path)",
                        code="bad_url")
    _check_type(mime, prefixes)
    if i["filename"]:
        filename = PurePosixPath(i["filename"].replace("\\", "/")).name or filename
    stored = await store(ctx, data, mime, filename)
    return {"file": stored, "mime_type": mime, "size": len(data), "filename": filename}


def _prefixes(value: Any) -> list[str]:
    if value is None:
        return list(DEFAULT_ALLOWED)
    if isinstance(value, str):
        value = [v for v in (p.strip() for p in value.split(",")) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_input("input 'allowed_types' must be a list of content-type prefixes such as \"image/\"")
    return [v.lower() for v in value]


def media_tools() -> list[BuiltinTool]:
    return [BuiltinTool(FETCH.model_copy(deep=True), run_fetch)]
