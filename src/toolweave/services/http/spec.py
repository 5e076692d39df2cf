"""The call description of an ``http`` tool (``metadata.http``), parsed and checked. No I/O.

A tool definition says how to call a hosted API: the request (method, path or URL, query, headers,
a JSON, multipart or raw body built from the inputs), how the outputs are read from the response
(a path per output), how errors are classified, and, for asynchronous APIs, how to find the run id,
poll its status, fetch its result, cancel it and read its webhooks. Secrets are never written here:
they belong to the service instance (settings), whose base URL and headers every request gets.

Values in ``query``, ``headers`` and bodies are templates:

- a string is a Jinja template (sandboxed, strict) over the inputs: ``"{{ prompt }}, oil painting"``;
- ``{"$input": NAME}`` is the input's value with its type (a number stays a number); an absent
  optional input drops the key (or list item), so the API's own default applies. Options:
  ``default``, ``as`` (media: ``url``, ``data_uri``, ``base64``, ``file``, ``bytes``), ``split``
  (text into a list on a separator);
- anything else (numbers, booleans, lists, objects) is sent as written, its strings rendered.

See docs/http-services.md for the whole format.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from toolweave.model.definitions import ParamType, ToolDefinition
from toolweave.model.paths import PathError, parse_path

MEDIA_FORMS = ("url", "data_uri", "base64", "file", "bytes")
DEFAULT_MODERATION_CODES = (
    "content_policy_violation",
    "moderation_blocked",
    "content_filter",
    "safety",
    "nsfw",
    "content_moderation",
    "image_generation_user_error",
)
"""Error codes and types that mean the provider refused the content (matched case-insensitively,
also as a word inside a longer code)."""


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True)


class RequestSpec(_Spec):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str | None = None
    """Appended to the service's ``base_url``."""
    url: str | None = None
    """An absolute URL (a template over the inputs, and the run id in follow-up requests)."""
    query: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    multipart: dict[str, Any] | None = None
    raw: Any = None
    """The whole body: a media ``$input`` (sent as its bytes with its type) or text."""
    timeout_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_target_one_body(self) -> RequestSpec:
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of path (under the service's base_url) or url")
        bodies = [k for k in ("json_body", "multipart", "raw") if getattr(self, k) is not None]
        if len(bodies) > 1:
            raise ValueError("give at most one body: json, multipart or raw")
        if bodies and self.method == "GET":
            raise ValueError("a GET request has no body")
        return self


class OutputSpec(_Spec):
    path: str | None = None
    """Where the output is in the response (``data[0].url``; ``[*]`` takes every item of a list).
    None: the whole response (the bytes of a binary response, the text of a text one)."""
    mime_type: str | None = None
    """The type of base64 media that does not say it (``b64_json`` images are PNG)."""
    optional: bool = False
    """A response without it leaves the output out instead of failing the generation."""


class ErrorSpec(_Spec):
    message: list[str] = Field(
        default_factory=lambda: ["error.message", "error", "detail", "message", "title"]
    )
    """Paths tried in order for the error's text."""
    code: list[str] = Field(default_factory=lambda: ["error.code", "error.type", "error_type", "code", "type"])
    moderation: list[str] = Field(default_factory=lambda: list(DEFAULT_MODERATION_CODES))
    moderation_statuses: list[int] = Field(default_factory=list)
    """HTTP statuses that always mean a refusal of the content (e.g. an API answering 451)."""


class StatusSpec(_Spec):
    path: str = "status"
    running: list[str] = Field(default_factory=list)
    succeeded: list[str] = Field(min_length=1)
    failed: list[str] = Field(default_factory=list)
    cancelled: list[str] = Field(default_factory=list)
    progress: str | None = None
    """Path of the progress (0..1, or 0..100)."""
    error: str | None = None
    """Path of the failure's message (else the error paths of ``errors``)."""

    @model_validator(mode="after")
    def _disjoint(self) -> StatusSpec:
        seen: dict[str, str] = {}
        for group in ("running", "succeeded", "failed", "cancelled"):
            for value in getattr(self, group):
                if value in seen:
                    raise ValueError(f"status {value!r} is both {seen[value]} and {group}")
                seen[value] = group
        return self


class WebhookSpec(_Spec):
    """How the API learns our webhook URL (``{{ webhook_url }}``), and how its calls read.

    ``query`` and ``body`` are added to the submit request only when this server has a public URL.
    A webhook body is read like a status response unless ``id``/``status``/``outputsAt`` say
    otherwise; when ``fetchResult`` is true, the outputs are fetched with ``async.result``."""

    query: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    status: StatusSpec | None = None
    outputs_at: str | None = None
    fetch_result: bool = False


class AsyncSpec(_Spec):
    id: str
    """Path of the platform's run id in the submit response."""
    poll: RequestSpec
    """The status request; its templates see ``id`` (the platform's run id) and the inputs."""
    poll_format: Literal["json", "sse"] = "json"
    """``sse``: the poll is an event stream that ends with the result (Gradio's ``/call`` API):
    its ``complete`` event is the success, an ``error`` event the failure."""
    status: StatusSpec | None = None
    """How a JSON status response reads (required unless ``pollFormat`` is ``sse``)."""
    result: RequestSpec | None = None
    """Fetch the outputs once the run succeeded (else they are read from the status response)."""
    cancel: RequestSpec | None = None
    webhook: WebhookSpec | None = None
    first_poll_seconds: float | None = Field(default=None, gt=0)
    """When to poll first without a webhook (default 2 s; with one, polls are the fallback for a
    lost webhook and the first comes after a minute)."""

    @model_validator(mode="after")
    def _status_given(self) -> AsyncSpec:
        if self.poll_format == "json" and self.status is None:
            raise ValueError("status is required: where the status is in a poll response, and which values mean what")
        if self.webhook is not None and self.webhook.status is None and self.status is None:
            raise ValueError("webhook.status is required when polls are an event stream")
        return self


class RefusalSpec(_Spec):
    """A success that is really a refusal of the content: a non-empty value at ``path`` (chat's
    ``choices[0].message.refusal``), or the value ``equals`` (``finish_reason: content_filter``)."""

    path: str
    equals: str | None = None


class HttpCall(_Spec):
    request: RequestSpec
    outputs: dict[str, OutputSpec] = Field(default_factory=dict)
    """By output name; an output not listed is read at the path of its own name."""
    format: Literal["auto", "json", "sse", "binary", "text"] = "auto"
    """How the response carrying the outputs is read (auto: from its content type). ``sse``: an
    event stream (Gradio), read as the data of its ``complete`` event."""
    errors: ErrorSpec = Field(default_factory=ErrorSpec)
    refusals: list[RefusalSpec] = Field(default_factory=list)
    async_: AsyncSpec | None = Field(default=None, alias="async")
    idempotent: bool = False
    """Sending the request again is harmless (a free local server; an API given an idempotency key):
    after a crash between sending and recording it, it is sent again instead of failing."""


# --- templates ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@functools.lru_cache(maxsize=4096)
def template_names(source: str) -> frozenset[str]:
    """The variables a template reads; raises ``ValueError`` when it does not parse."""
    env = environment()
    try:
        return frozenset(meta.find_undeclared_variables(env.parse(source)))
    except TemplateSyntaxError as exc:
        raise ValueError(f"template {source!r} does not parse: {exc.message} (line {exc.lineno})") from None


def walk_values(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every template string and ``$input`` marker inside a value, with its path."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        if "$input" in value:
            yield where, value
            return
        for key, item in value.items():
            yield from walk_values(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_values(item, f"{where}[{index}]")


# --- checking a tool ------------------------------------------------------------------------------


def parse_call(tool: ToolDefinition) -> HttpCall:
    """The tool's call description; raises ``ValueError`` (pydantic's, naming fields) when malformed."""
    raw = tool.metadata.get("http")
    if not isinstance(raw, Mapping):
        raise ValueError("metadata.http is required: the request this tool sends (see docs/http-services.md)")
    return HttpCall.model_validate(raw)


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    found = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        message = str(err["msg"]).removeprefix("Value error, ")
        found.append((f"metadata.http.{loc}" if loc else "metadata.http", message))
    return found


def check_call(tool: ToolDefinition, *, has_base_url: bool) -> list[tuple[str, str]]:
    """Problems of an http tool's call description, as ``(path, sentence)``: what does not parse,
    names no input, or cannot work (a path with no base URL, media sent in a form it cannot take)."""
    try:
        call = parse_call(tool)
    except ValidationError as exc:
        return _pydantic_problems(exc)
    except ValueError as exc:
        return [("metadata.http", str(exc))]
    problems: list[tuple[str, str]] = []
    inputs = {p.name: p for p in tool.input_schema}
    outputs = {o.name: o for o in tool.output_schema}
    base = {*inputs, "inputs", "generation_id"}

    def request(spec: RequestSpec, where: str, names: set[str]) -> None:
        if spec.path is not None and not has_base_url:
            problems.append((f"{where}.path", "the service has no base_url, so the request needs a full url"))
        for key, value in (("url", spec.url), ("path", spec.path)):
            if value is not None:
                template(f"{where}.{key}", value, names)
        for part in ("query", "headers", "json_body", "multipart", "raw"):
            label = "json" if part == "json_body" else part
            for at, value in walk_values(getattr(spec, part), f"{where}.{label}"):
                if isinstance(value, str):
                    template(at, value, names)
                else:
                    marker(at, value, multipart=part == "multipart", raw=part == "raw")

    def template(at: str, source: str, names: set[str]) -> None:
        try:
            unknown = sorted(template_names(source) - names)
        except ValueError as exc:
            problems.append((at, str(exc)))
            return
        if unknown:
            problems.append((at, f"the template reads {', '.join(map(repr, unknown))}, which it is not given; "
                             f"it may read {', '.join(sorted(names))}"))

    def marker(at: str, value: Mapping[str, Any], *, multipart: bool, raw: bool) -> None:
        name = value.get("$input")
        extra = set(value) - {"$input", "as", "default", "split"}
        if extra:
            problems.append((at, f"unknown keys {', '.join(sorted(map(str, extra)))} next to $input"))
        param = inputs.get(str(name))
        if param is None:
            problems.append((at, f"$input {name!r} is not an input of this tool (inputs: {', '.join(inputs) or 'none'})"))
            return
        form = value.get("as")
        if form is not None and not param.type.is_media:
            problems.append((at, f"'as' applies to media inputs; {name!r} is {param.type.value}"))
        if form is not None and form not in MEDIA_FORMS:
            problems.append((at, f"'as' must be one of {', '.join(MEDIA_FORMS)}, not {form!r}"))
        if form == "file" and not multipart:
            problems.append((at, "media 'as: file' is a multipart file part; use multipart, or url/data_uri/base64"))
        if form == "bytes" and not raw:
            problems.append((at, "media 'as: bytes' is a raw body; use raw, or url/data_uri/base64"))
        if value.get("split") is not None and param.type not in (ParamType.STRING, ParamType.TEXT):
            problems.append((at, f"'split' applies to text inputs; {name!r} is {param.type.value}"))

    def path(at: str, source: str | None) -> None:
        if source is None:
            return
        try:
            for part in source.split("[*]"):
                if part.strip("."):
                    parse_path(part.lstrip("."))
        except PathError as exc:
            problems.append((at, str(exc)))

    def status(spec: StatusSpec, where: str) -> None:
        for key in ("path", "progress", "error"):
            path(f"{where}.{key}", getattr(spec, key))

    request(call.request, "metadata.http.request", base)
    for name, out in call.outputs.items():
        if name not in outputs:
            problems.append((f"metadata.http.outputs.{name}", f"{name!r} is not an output of this tool "
                             f"(outputs: {', '.join(outputs) or 'none'})"))
        path(f"metadata.http.outputs.{name}.path", out.path)
    if call.format == "binary":
        for name, out_param in outputs.items():
            if not out_param.type.is_media:
                problems.append((f"outputSchema.{name}", "a binary response can only fill media outputs"))
    for key in ("message", "code"):
        for index, item in enumerate(getattr(call.errors, key)):
            path(f"metadata.http.errors.{key}[{index}]", item)
    for index, refusal in enumerate(call.refusals):
        path(f"metadata.http.refusals[{index}].path", refusal.path)
    asynchronous = call.async_
    if asynchronous is not None:
        path("metadata.http.async.id", asynchronous.id)
        follow = {*base, "id"}
        request(asynchronous.poll, "metadata.http.async.poll", follow)
        if asynchronous.status is not None:
            status(asynchronous.status, "metadata.http.async.status")
        if asynchronous.result is not None:
            request(asynchronous.result, "metadata.http.async.result", follow)
        if asynchronous.cancel is not None:
            request(asynchronous.cancel, "metadata.http.async.cancel", follow)
        hook = asynchronous.webhook
        if hook is not None:
            names = {*base, "webhook_url"}
            for part in ("query", "body", "headers"):
                for at, value in walk_values(getattr(hook, part), f"metadata.http.async.webhook.{part}"):
                    if isinstance(value, str):
                        template(at, value, names)
                    else:
                        marker(at, value, multipart=False, raw=False)
            if hook.body and call.request.json_body is not None and not isinstance(call.request.json_body, Mapping):
                problems.append(("metadata.http.async.webhook.body", "the request's json body is not an object to add to"))
            if hook.body and call.request.json_body is None:
                problems.append(("metadata.http.async.webhook.body", "the request has no json body to add to"))
            path("metadata.http.async.webhook.id", hook.id)
            path("metadata.http.async.webhook.outputsAt", hook.outputs_at)
            if hook.status is not None:
                status(hook.status, "metadata.http.async.webhook.status")
            if hook.fetch_result and asynchronous.result is None:
                problems.append(("metadata.http.async.webhook.fetchResult", "fetchResult needs async.result"))
    return problems
