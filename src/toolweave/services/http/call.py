"""Building an API request from a tool's inputs, and reading what the API answers.

``Renderer`` turns the templates of a ``RequestSpec`` into an ``httpx`` request (inputs, media in the
form the API wants, the webhook URL); ``read_body`` parses a response (JSON, an event stream, bytes,
text); ``classify`` turns an HTTP failure into a ``ServiceError`` (429 and 5xx retryable with the
backend's ``Retry-After``, other 4xx not, a content refusal named ``moderation``); ``select`` reads
a path (with ``[*]``) out of a parsed body. Secrets are the service's; they are scrubbed from every
message and summary here.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from toolweave.artifacts import media_problem
from toolweave.model.definitions import InputParam, ParamType, ToolDefinition
from toolweave.model.paths import PathError, follow_path
from toolweave.model.records import ArtifactRef
from toolweave.services.base import ServiceError, ServiceHost, retry_after_header
from toolweave.services.http.spec import DEFAULT_MODERATION_CODES, ErrorSpec, RequestSpec, environment

if TYPE_CHECKING:
    import httpx

_DROP = object()
"""A value that leaves its key (or list item) out of the request: an absent optional input."""

SAFE_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,200}$")
"""What a platform run id may look like: it is written into URL paths."""

MAX_MESSAGE_CHARS = 500
MAX_SUMMARY_STRING = 400


@dataclass
class Endpoint:
    """A configured service instance as requests see it (its secrets stay here)."""

    name: str
    base_url: str | None
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    secrets: frozenset[str] = frozenset()

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        return text


@dataclass
class Built:
    """An API request ready to send, and what of it may be recorded."""

    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    content: bytes | None = None
    json_body: Any = None
    has_json: bool = False
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, Any] | None = None

    def send_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.params, "headers": self.headers}
        if self.has_json:
            kwargs["json"] = self.json_body
        elif self.files is not None or self.data is not None:
            kwargs["files"] = self.files or None
            kwargs["data"] = self.data or None
        elif self.content is not None:
            kwargs["content"] = self.content
        return kwargs


def with_defaults(tool: ToolDefinition, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs with the schema's defaults for those absent (the engine applies them before a
    run; a service does not count on its caller)."""
    merged = {p.name: p.default for p in tool.input_schema if p.default is not None}
    merged.update({k: v for k, v in inputs.items() if v is not None})
    return merged


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


class Renderer:
    """Renders one tool's templates for one generation."""

    def __init__(
        self,
        tool: ToolDefinition,
        inputs: Mapping[str, Any],
        host: ServiceHost,
        *,
        names: Mapping[str, Any] | None = None,
        media_max_bytes: int,
    ) -> None:
        self.tool = tool
        self.inputs = with_defaults(tool, inputs)
        self.host = host
        self.media_max_bytes = media_max_bytes
        shown: dict[str, Any] = {}
        for name, value in self.inputs.items():
            ref = ArtifactRef.from_value(value)
            shown[name] = host.media_url(ref) if ref is not None else value
        self.context: dict[str, Any] = {**shown, "inputs": shown, **dict(names or {})}

    # strings ---------------------------------------------------------------------------------

    def text(self, source: str, where: str) -> str:
        try:
            return environment().from_string(source).render(self.context)
        except UndefinedError as exc:
            raise ServiceError(
                f"tool {self.tool.tool_id}: {where}: {exc.message} (an optional input needs "
                "`| default(...)` in a template, or an $input marker)",
                code="bad_definition",
            ) from None
        except (TemplateError, SecurityError, TypeError, ValueError) as exc:
            raise ServiceError(f"tool {self.tool.tool_id}: {where}: {exc}", code="bad_definition") from None

    # values ----------------------------------------------------------------------------------

    async def value(self, template: Any, where: str, *, part: str) -> Any:
        """A template value rendered: strings rendered, ``$input`` markers resolved, the rest kept.
        ``part`` is ``json``, ``query``, ``headers``, ``multipart`` or ``raw`` (the media default)."""
        if isinstance(template, str):
            return self.text(template, where)
        if isinstance(template, Mapping):
            if "$input" in template:
                return await self._input(template, where, part)
            out: dict[str, Any] = {}
            for key, item in template.items():
                rendered = await self.value(item, f"{where}.{key}", part=part)
                if rendered is not _DROP:
                    out[str(key)] = rendered
            return out
        if isinstance(template, list):
            items = []
            for index, item in enumerate(template):
                rendered = await self.value(item, f"{where}[{index}]", part=part)
                if rendered is not _DROP:
                    items.append(rendered)
            return items
        return template

    async def _input(self, marker: Mapping[str, Any], where: str, part: str) -> Any:
        name = str(marker["$input"])
        param = self.tool.input(name)
        value = self.inputs.get(name)
        if value is None:
            value = marker.get("default")
        if value is None:
            return _DROP
        if param is None or not param.type.is_media:
            separator = marker.get("split")
            if separator is not None and isinstance(value, str):
                return [item.strip() for item in value.split(str(separator)) if item.strip()]
            return value
        default_form = {"multipart": "file", "raw": "bytes"}.get(part, "url")
        form = str(marker.get("as") or default_form)
        if form == "url":
            ref = ArtifactRef.from_value(value)
            return self.host.media_url(ref) if ref is not None else str(value)
        data, mime = await self.media_bytes(param, value)
        if form == "data_uri":
            return f"data:{mime};base64,{base64.b64encode(data).decode()}"
        if form == "base64":
            return base64.b64encode(data).decode()
        ref = ArtifactRef.from_value(value)
        filename = (ref.filename if ref is not None and ref.filename else None) or f"{name}{_extension(mime)}"
        return _Media(data, mime, filename)

    async def media_bytes(self, param: InputParam, value: Any) -> tuple[bytes, str]:
        """A media input's bytes, checked to be of the input's type before they leave."""
        try:
            data, mime = await self.host.load_media(value)
        except ServiceError:
            raise
        except Exception as exc:
            raise ServiceError(f"input {param.name!r} cannot be read: {exc}", code="bad_input") from None
        if len(data) > self.media_max_bytes:
            raise ServiceError(f"input {param.name!r} is larger than {self.media_max_bytes} bytes", code="bad_input")
        problem = media_problem(param.type.value, data)
        if problem:
            raise ServiceError(f"input {param.name!r} {problem}; nothing was sent", code="bad_input")
        return data, mime or "application/octet-stream"

    # requests --------------------------------------------------------------------------------

    async def build(
        self,
        spec: RequestSpec,
        endpoint: Endpoint,
        where: str,
        *,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        extra_headers: Mapping[str, Any] | None = None,
    ) -> Built:
        if spec.url is not None:
            url = self.text(spec.url, f"{where}.url")
        else:
            assert spec.path is not None
            if not endpoint.base_url:
                raise ServiceError(
                    f"service {endpoint.name!r} has no base_url for the path of tool {self.tool.tool_id}",
                    code="not_configured",
                )
            url = endpoint.base_url.rstrip("/") + "/" + self.text(spec.path, f"{where}.path").lstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ServiceError(f"tool {self.tool.tool_id}: {where}: {url[:80]!r} is not an http(s) URL", code="bad_definition")
        if endpoint.base_url and (endpoint.headers or endpoint.query) and _origin(url) != _origin(endpoint.base_url):
            raise ServiceError(
                f"tool {self.tool.tool_id}: {where} goes to {_origin(url)}, not to service {endpoint.name!r} "
                f"({_origin(endpoint.base_url)}); its credentials are not sent elsewhere",
                code="bad_definition",
            )
        params = dict(endpoint.query)
        for key, template in {**spec.query, **dict(extra_query or {})}.items():
            rendered = await self.value(template, f"{where}.query.{key}", part="query")
            if rendered is not _DROP:
                params[str(key)] = _text(rendered)
        headers: dict[str, str] = {}
        for key, template in {**spec.headers, **dict(extra_headers or {})}.items():
            rendered = await self.value(template, f"{where}.headers.{key}", part="headers")
            if rendered is not _DROP:
                headers[str(key)] = _text(rendered)
        headers.update(endpoint.headers)  # the service's (auth) headers win over a definition's
        built = Built(method=spec.method, url=url, params=params, headers=headers)
        if spec.json_body is not None:
            body = await self.value(spec.json_body, f"{where}.json", part="json")
            if extra_body:
                if not isinstance(body, dict):
                    raise ServiceError(f"tool {self.tool.tool_id}: the json body is not an object", code="bad_definition")
                for key, template in extra_body.items():
                    rendered = await self.value(template, f"{where}.webhook.body.{key}", part="json")
                    if rendered is not _DROP:
                        body[str(key)] = rendered
            built.json_body = None if body is _DROP else body
            built.has_json = True
        elif spec.multipart is not None:
            files: list[tuple[str, tuple[str, bytes, str]]] = []
            data: dict[str, Any] = {}
            for key, template in spec.multipart.items():
                rendered = await self.value(template, f"{where}.multipart.{key}", part="multipart")
                for item in rendered if isinstance(rendered, list) else [rendered]:
                    if item is _DROP:
                        continue
                    if isinstance(item, _Media):
                        files.append((str(key), (item.filename, item.data, item.mime)))
                    elif str(key) in data:
                        existing = data[str(key)]
                        data[str(key)] = [*(existing if isinstance(existing, list) else [existing]), _text(item)]
                    else:
                        data[str(key)] = _text(item)
            built.files, built.data = files, data
        elif spec.raw is not None:
            rendered = await self.value(spec.raw, f"{where}.raw", part="raw")
            if isinstance(rendered, _Media):
                built.content = rendered.data
                built.headers.setdefault("Content-Type", rendered.mime)
            elif rendered is not _DROP:
                built.content = _text(rendered).encode()
                built.headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return built


@dataclass
class _Media:
    data: bytes
    mime: str
    filename: str


def _extension(mime: str) -> str:
    import mimetypes

    return mimetypes.guess_extension(mime) or ".bin"


# --- responses -----------------------------------------------------------------------------------


@dataclass
class Body:
    """A parsed response: ``value`` is JSON, text, or the bytes of a binary one (``mime``)."""

    value: Any
    mime: str
    binary: bool = False


def _mime(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def read_body(response: httpx.Response, fmt: str, what: str) -> Body:
    """Parse a successful response; a body that is not what it should be is a ``bad_response``,
    retryable as a poll's (the next poll may read better, and a poll costs nothing). A submit's
    answer is another matter: the API took the request, and sending it again pays again
    (``HttpService._answered_failure`` keeps it retryable only for an ``idempotent`` tool)."""
    mime = _mime(response)
    if fmt == "auto":
        if mime == "application/json" or mime.endswith("+json"):
            fmt = "json"
        elif mime == "text/event-stream":
            fmt = "sse"
        elif mime.startswith(("image/", "video/", "audio/")) or mime in ("application/octet-stream", "binary/octet-stream"):
            fmt = "binary"
        elif mime.startswith("text/"):
            fmt = "text"
        else:
            fmt = "json"
    if fmt == "binary":
        return Body(response.content, mime, binary=True)
    if fmt == "text":
        return Body(response.text, mime)
    if fmt == "sse":
        return Body(read_event_stream(response.text, what), mime)
    try:
        return Body(response.json() if response.content else None, mime)
    except (ValueError, RecursionError):
        raise ServiceError(f"{what} answered with something that is not JSON ({mime or 'no content type'})",
                           retryable=True, code="bad_response") from None


def read_event_stream(text: str, what: str) -> Any:
    """The result of a server-sent event stream (Gradio's ``/call`` API): the data of its
    ``complete`` event; an ``error`` event is the run's failure."""
    events: list[tuple[str, str]] = []
    for block in re.split(r"\r?\n\r?\n", text):
        name = "message"
        lines: list[str] = []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].lstrip(" "))
        if lines or name != "message":
            events.append((name, "\n".join(lines)))
    for name, data in events:
        if name == "error":
            detail = data if data and data != "null" else "no detail"
            raise ServiceError(f"{what} reported an error: {detail[:MAX_MESSAGE_CHARS]}", code="failed")
    for name, data in reversed(events):
        if name == "complete":
            try:
                return json.loads(data)
            except (ValueError, RecursionError):
                return data
    raise ServiceError(f"{what} ended its event stream without a result", retryable=True, code="bad_response")


def select(value: Any, path: str | None) -> Any:
    """The part of ``value`` at ``path``; ``[*]`` maps the rest of the path over a list. Raises
    ``PathError`` when it is missing."""
    if path is None:
        return value
    head, star, rest = path.partition("[*]")
    current = follow_path(value, head.lstrip(".")) if head.strip(".") else value
    if not star:
        return current
    if not isinstance(current, list):
        raise PathError(f"path {path!r}: {head or 'the value'} is not a list")
    return [select(item, rest.lstrip(".") or None) for item in current]


def fraction(value: Any) -> float | None:
    """A reported progress as a fraction: 0..1 is one, 1..100 a percentage; anything else (a
    negative number, over 100, not a number) is no progress at all, so the generation keeps the
    progress it had (250 is not 2.5, nor 100 %)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if 0.0 <= number <= 1.0:
        return number
    if 1.0 < number <= 100.0:
        return number / 100
    return None


def first(value: Any, paths: Iterable[str]) -> Any:
    for path in paths:
        try:
            found = select(value, path)
        except PathError:
            continue
        if found not in (None, "", [], {}):
            return found
    return None


def retry_after(response: httpx.Response, body: Any) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or an HTTP date), else from a body's
    ``retry_after`` / ``estimated_time`` (Hugging Face's model loading)."""
    seconds = retry_after_header(response.headers.get("retry-after"), time.time())
    if seconds is not None:
        return seconds
    if isinstance(body, Mapping):
        for key in ("retry_after", "estimated_time"):
            value = body.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < float("inf"):
                return float(value)
    return None


def is_moderation(code: str | None, spec: ErrorSpec) -> bool:
    if not code:
        return False
    lowered = code.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    for item in spec.moderation or DEFAULT_MODERATION_CODES:
        wanted = item.lower()
        if lowered == wanted or wanted in words or (len(wanted) > 6 and wanted in lowered):
            return True
    return False


def message_of(body: Any, spec: ErrorSpec) -> str | None:
    found = first(body, spec.message)
    if found is None:
        return None
    if isinstance(found, list):  # FastAPI-style validation errors (fal, Replicate)
        parts = []
        for item in found:
            if isinstance(item, Mapping) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(_text(item))
        found = "; ".join(parts)
    return _text(found)


def classify(
    response: httpx.Response, body: Any, spec: ErrorSpec, endpoint: Endpoint, what: str
) -> ServiceError:
    """The ``ServiceError`` for an HTTP failure: retryable for 408, 409, 425, 429 and 5xx (with the
    backend's ``Retry-After``), not for other 4xx; a content refusal is ``code="moderation"``."""
    status = response.status_code
    message = message_of(body, spec) or (response.text.strip()[:200] if not isinstance(body, dict | list) else "")
    message = endpoint.scrub(message or response.reason_phrase or f"HTTP {status}")[:MAX_MESSAGE_CHARS]
    code_value = first(body, spec.code)
    code = _text(code_value) if code_value is not None else None
    types = [code, _text(first(body, ["error.type", "type", "error_type"]) or "")]
    details = {"httpStatus": status, **({"providerCode": code} if code else {})}
    if status in spec.moderation_statuses or any(is_moderation(t, spec) for t in types if t):
        return ServiceError(
            f"{what} refused the request on content grounds (moderation): {message}",
            code="moderation", details=details,
        )
    if status in (401, 403):
        return ServiceError(f"{what} rejected the credentials of service {endpoint.name!r} (HTTP {status}): {message}",
                            code="unauthorized", details=details)
    if status == 402:
        return ServiceError(f"{what} wants payment (HTTP 402): {message}", code="payment_required", details=details)
    if status == 429 or status >= 500 or status in (408, 409, 425):
        label = "rate_limited" if status == 429 else ("server_error" if status >= 500 else "conflict")
        return ServiceError(f"{what} answered HTTP {status}: {message}", retryable=True, code=label,
                            details=details, retry_after=retry_after(response, body))
    return ServiceError(f"{what} refused the request (HTTP {status}): {message}",
                        code="not_found" if status == 404 else "rejected", details=details)


def summary(value: Any, endpoint: Endpoint, depth: int = 0) -> Any:
    """A response as it may be recorded: long strings (base64 media) shortened, secrets scrubbed."""
    if isinstance(value, str):
        value = endpoint.scrub(value)
        return value if len(value) <= MAX_SUMMARY_STRING else f"<{len(value)} characters>"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if depth > 8:
        return "…"
    if isinstance(value, Mapping):
        return {str(k): summary(v, endpoint, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, list):
        items = [summary(v, endpoint, depth + 1) for v in value[:50]]
        return items + ([f"<{len(value) - 50} more>"] if len(value) > 50 else [])
    return value


# --- outputs ---------------------------------------------------------------------------------------


def coerce_scalar(kind: ParamType, value: Any, name: str) -> Any:
    """A non-media output value in its declared type."""
    if kind in (ParamType.STRING, ParamType.TEXT, ParamType.ENUM):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind in (ParamType.INTEGER, ParamType.SEED, ParamType.NUMBER):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ServiceError(f"output {name!r} should be a number, the API gave {str(value)[:60]!r}",
                               code="bad_response") from None
        return int(number) if kind is not ParamType.NUMBER and number.is_integer() else number
    if kind is ParamType.BOOLEAN:
        if isinstance(value, bool):
            return value
        raise ServiceError(f"output {name!r} should be true or false, the API gave {str(value)[:60]!r}",
                           code="bad_response")
    return value
