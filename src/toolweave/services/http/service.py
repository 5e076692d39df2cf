"""The ``http`` service: a hosted API called as its tool definition describes (``metadata.http``).

One ``HttpService`` per configured instance (``openai``, ``replicate``, ``fal``, ``huggingface``,
the bare ``http``, or any ``[toolweave.services.NAME]`` of kind ``http``): the instance holds the
base URL and the headers with the secrets; the tool holds the call.

- ``submit``: builds the request and sends it. A synchronous API's answer is read into outputs at
  once; an asynchronous one's run id is returned (the engine records it before anything waits),
  with our webhook URL passed the way the definition says when this server has a public URL.
  Right before it sends, it marks the generation (``gen.sending()``); after a crash between that
  mark and recording (``gen.recovering``), a request is not sent again unless the tool says it is
  ``idempotent``: it fails ``unknown_outcome`` rather than pay twice. A crash before the mark
  (nothing sent) is not recovering: the request is sent normally.
- ``poll``: the status request; a success fetches the result (``async.result``) or reads it from
  the status response; outputs are downloaded (through the public-URL guard) or decoded.
- ``parse_webhook_for``: a webhook body read by the tool's rules (pure); ``finalize`` completes a
  success with its outputs before the engine stores it.
- ``cancel``: the cancel request, when the definition has one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from toolweave.model.costing import input_cost, table_price, usage_cost
from toolweave.model.definitions import RateSource, ToolDefinition
from toolweave.model.paths import PathError
from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import (
    GenerationContext,
    ServiceError,
    ServiceHost,
    Submission,
    WebhookRejected,
    WebhookUpdate,
    read_at_most,
)
from toolweave.services.http.call import (
    SAFE_ID,
    Body,
    Built,
    Endpoint,
    Renderer,
    classify,
    fraction,
    is_moderation,
    message_of,
    read_body,
    select,
    summary,
    with_defaults,
)
from toolweave.services.http.outputs import read_output
from toolweave.services.http.spec import (
    AsyncSpec,
    HttpCall,
    OutputSpec,
    RequestSpec,
    StatusSpec,
    parse_call,
)
from toolweave.settings import Settings

if TYPE_CHECKING:  # httpx itself is imported with the first request (every App makes the bare http service)
    import httpx

log = logging.getLogger(__name__)

WEBHOOK_FALLBACK_POLL_SECONDS = 60.0
SENT_SHARE_OF_DEADLINE = 0.9
"""The share of a step's time a sent submit may take before it ends as possibly paid (the
engine's own deadline, a retryable timeout, comes at the end of it)."""
SENT_UNANSWERED = ("timeout", "disconnected")
"""``_send``'s codes for a request that went out and got no answer."""
_BODY = "_body"
"""Where a parsed webhook keeps the success body until ``finalize`` reads it (never stored)."""


class HttpService:
    """One configured ``http`` instance behind the ``Service`` protocol."""

    marks_sending = True
    """``submit`` awaits ``gen.sending()`` right before it sends (``Service``)."""

    def __init__(
        self,
        name: str,
        host: ServiceHost,
        settings: Settings,
        endpoint: Endpoint,
        *,
        timeout_seconds: float,
        concurrency: int,
    ) -> None:
        self.name = name
        self.host = host
        self.settings = settings
        self.endpoint = endpoint
        self.timeout_seconds = timeout_seconds
        self.concurrency = concurrency
        self._calls: dict[str, HttpCall] = {}

    def capacity(self, tool: ToolDefinition) -> tuple[str, int]:
        limit = tool.metadata.get("concurrency")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return f"http:{self.name}:{tool.tool_id}", limit
        return f"http:{self.name}", self.concurrency

    # the call ---------------------------------------------------------------------------------

    def call_of(self, tool: ToolDefinition) -> HttpCall:
        key = json.dumps(tool.metadata.get("http"), sort_keys=True, default=str)
        call = self._calls.get(key)
        if call is None:
            try:
                call = parse_call(tool)
            except ValueError as exc:
                raise ServiceError(f"tool {tool.tool_id}: metadata.http is not valid: {exc}", code="bad_definition") from None
            self._calls[key] = call
        return call

    def _what(self, tool: ToolDefinition) -> str:
        return f"{self.name} ({tool.tool_id})"

    def _renderer(self, gen: GenerationContext, **names: Any) -> Renderer:
        return Renderer(
            gen.tool, gen.inputs, self.host,
            names={"generation_id": gen.generation_id, **names},
            media_max_bytes=self.settings.media_max_bytes,
        )

    async def _send(self, built: Built, spec: RequestSpec, what: str, *, sent_matters: bool) -> tuple[httpx.Response, bytes]:
        """Send a request; the response and its body (at most twice ``media_max_bytes``).

        A failure before anything was sent (no connection: refused, DNS, a connect or pool
        timeout) is ``unreachable``; one after the request began to go out (no answer in time, the
        connection dropped) is ``timeout`` or ``disconnected``, both retryable here: ``submit``
        decides whether a request that may have reached the API is sent again."""
        import httpx

        timeout = spec.timeout_seconds or self.timeout_seconds
        limit = self.settings.media_max_bytes * 2
        request = self.host.http.build_request(built.method, built.url, timeout=timeout, **built.send_kwargs())
        try:
            response = await self.host.http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
                httpx.ProxyError) as exc:  # no connection to the API: nothing reached it
            raise ServiceError(f"{what} could not be reached: {type(exc).__name__}", retryable=True, code="unreachable") from None
        except httpx.HTTPError as exc:
            maybe = " (the request was sent: it may have been processed)" if sent_matters else ""
            if isinstance(exc, httpx.TimeoutException):
                raise ServiceError(f"{what} did not answer in time{maybe}: {type(exc).__name__}", retryable=True,
                                   code="timeout") from None
            raise ServiceError(f"{what} dropped the connection before answering{maybe}: {type(exc).__name__}",
                               retryable=True, code="disconnected") from None
        try:
            content = await read_at_most(response.aiter_bytes(), limit,
                                         lambda: ServiceError(f"{what} answered with more than {limit} bytes", code="too_large"))
        except httpx.HTTPError as exc:  # (its status says whether the API took the request: ``submit``)
            raise ServiceError(f"{what} broke off its answer: {type(exc).__name__}", retryable=True, code="timeout",
                               details={"httpStatus": response.status_code}) from None
        finally:
            await response.aclose()
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
        read = httpx.Response(response.status_code, headers=headers, content=content, request=request)
        return read, content

    def _failure(self, call: HttpCall, response: httpx.Response, what: str) -> ServiceError:
        try:
            body: Any = response.json() if response.content else None
        except (ValueError, RecursionError):
            body = None
        return classify(response, body, call.errors, self.endpoint, what)

    def _raw(self, built: Built | None, response: httpx.Response | None, body: Any, **extra: Any) -> dict[str, Any]:
        """What is recorded of an exchange: no headers, no query string, secrets scrubbed."""
        raw: dict[str, Any] = {"service": self.name}
        if built is not None:
            raw["request"] = f"{built.method} {self.endpoint.scrub(built.url)}"
        if response is not None:
            raw["httpStatus"] = response.status_code
        if body is not None:
            raw["response"] = summary(body, self.endpoint)
        raw.update(extra)
        return raw

    # submit -----------------------------------------------------------------------------------

    async def submit(self, gen: GenerationContext) -> Submission:
        # The engine gives up on a submit at the step's deadline (``gen.timeout_seconds`` from now) and
        # counts it a retryable timeout; a request sent by then must end here first, as one maybe paid.
        deadline = asyncio.get_running_loop().time() + gen.timeout_seconds * SENT_SHARE_OF_DEADLINE
        tool = gen.tool
        call = self.call_of(tool)
        what = self._what(tool)
        if gen.recovering and not call.idempotent:
            raise ServiceError(
                f"generation {gen.generation_id} may already have been sent to {self.name}, which takes no "
                "id of ours to recognise it by; not sending it again to avoid paying twice",
                code="unknown_outcome",
            )
        asynchronous = call.async_
        hook = asynchronous.webhook if asynchronous is not None and gen.webhook_url else None
        renderer = self._renderer(gen, webhook_url=gen.webhook_url)
        built = await renderer.build(
            call.request, self.endpoint, "request",
            extra_query=hook.query if hook else None,
            extra_body=hook.body if hook else None,
            extra_headers=hook.headers if hook else None,
        )
        await gen.sending()  # durably: from here on, a crash leaves the outcome unknown
        answered: list[int] = []  # the status of the API's answer, once it came
        try:
            async with asyncio.timeout_at(deadline):
                return await self._sent(gen, call, built, answered)
        except TimeoutError:
            exc = ServiceError(f"{what} did not finish within the step's {gen.timeout_seconds:g} s (the request was "
                               "sent: it may have been processed)", retryable=True, code="timeout")
            if not answered or answered[0] < 400:
                return Submission(update=self._answered_failure(gen, call, built, exc, answered[0] if answered else None))
            raise exc from None

    async def _sent(self, gen: GenerationContext, call: HttpCall, built: Built, answered: list[int]) -> Submission:
        """The rest of a submit once its request is on its way: its answer read (its status put in
        ``answered``), any failure after the request left that may have been paid for recorded as
        such (``_answered_failure``)."""
        tool, what, asynchronous = gen.tool, self._what(gen.tool), call.async_
        hook = asynchronous.webhook if asynchronous is not None and gen.webhook_url else None
        try:
            response, _ = await self._send(built, call.request, what, sent_matters=True)
        except ServiceError as exc:
            status = (exc.details or {}).get("httpStatus")
            if isinstance(status, int) and status < 400:  # a 2xx answer that broke off: the API took it
                return Submission(update=self._answered_failure(gen, call, built, exc, status))
            if status is None and exc.code in SENT_UNANSWERED:  # sent: the API may have taken it
                return Submission(update=self._answered_failure(gen, call, built, exc, None))
            raise
        answered.append(response.status_code)
        if response.status_code >= 400:
            raise self._failure(call, response, what)
        body: Body | None = None
        try:
            if asynchronous is None:
                body = read_body(response, call.format, what)
                update = await self._completed(gen, call, body, self._raw(built, response, body.value))
                return Submission(update=update)
            body = read_body(response, "json", what)
            platform_id = self._platform_id(body.value, asynchronous.id, what)
        except ServiceError as exc:  # the API took the request and did (or started) the work
            return Submission(update=self._answered_failure(gen, call, built, exc, response.status_code, body))
        raw = self._raw(built, response, body.value, platformRunId=platform_id)
        update = RunUpdate(status=GenerationStatus.PROCESSING, progress=0.0, live_status="submitted",
                           platform_run_id=platform_id, raw=raw)
        if asynchronous.status is not None:
            try:
                seen = self._status(asynchronous.status, call, body.value, platform_id, what, tool)
            except ServiceError:
                seen = None
            if seen is not None and seen.status.terminal:  # answered at once (Replicate's Prefer: wait)
                seen = seen.model_copy(update={"raw": raw})
                try:
                    update = await self._finish(gen, call, seen, None if asynchronous.result else body)
                except ServiceError as exc:  # (a retryable one: the run is done at the API, and paid)
                    return Submission(update=self._answered_failure(gen, call, built, exc, response.status_code, body))
            elif seen is not None:
                update = seen.model_copy(update={"raw": raw})
        # With a webhook, polls are the fallback for lost ones: the first comes a minute later.
        first_poll = WEBHOOK_FALLBACK_POLL_SECONDS if hook else (asynchronous.first_poll_seconds or 2.0)
        return Submission(platform_run_id=platform_id, update=update, poll_after_seconds=first_poll)

    def _answered_failure(
        self, gen: GenerationContext, call: HttpCall, built: Built, exc: ServiceError, status: int | None,
        body: Body | None = None,
    ) -> RunUpdate:
        """A submit the API may have taken and charged for: it accepted it (``status``, a 2xx) and
        its answer cannot be used, or the request was sent and no answer came (``status`` None: a
        timeout, a dropped connection). Sending it again may pay again, so it is retryable only
        when the tool says its request is harmless to repeat (``idempotent``); an unanswered one is
        otherwise ``unknown_outcome``. The failure carries the price its costing model gives: for
        the inputs (static, table), or for the usage an answer we could read reports; the run's
        cost shows it (a failure is never charged to credits)."""
        retryable = exc.retryable and call.idempotent
        message, code = exc.message, exc.code
        if exc.retryable and not call.idempotent:
            if status is None:
                code = "unknown_outcome"
                message += (f" ({self.name} may have taken the request and charged for it; not sent again, "
                            "as the tool does not say `idempotent: true`)")
            else:
                message += (f" (the API accepted the request, HTTP {status}, so it was probably paid for; "
                            "not repeated, as the tool does not say `idempotent: true`)")
        details: dict[str, Any] = {**(exc.details or {}), "maybePaid": True}
        if status is None:
            details["cause"] = exc.code
        else:
            details["httpStatus"] = status
        error = ServiceError(message, retryable=retryable, code=code, details=details,
                             retry_after=exc.retry_after if retryable else None)
        cost = self._cost(gen, body) if body is not None else input_cost(gen.tool.costing_model,
                                                                          with_defaults(gen.tool, gen.inputs))
        extra = {"httpStatus": status} if status is not None else {}
        return RunUpdate(status=GenerationStatus.FAILED, error=error.info(), cost_usd=cost or None,
                         raw=self._raw(built, None, None, **extra))

    @staticmethod
    def _platform_id(body: Any, path: str, what: str) -> str:
        try:
            found = select(body, path)
        except PathError:
            found = None
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        if not isinstance(found, str) or not SAFE_ID.match(found):
            raise ServiceError(f"{what} accepted the request without a usable run id at {path!r}",
                               retryable=False, code="bad_response")
        return found

    # status -------------------------------------------------------------------------------------

    def _status(
        self, spec: StatusSpec, call: HttpCall, body: Any, platform_id: str, what: str, tool: ToolDefinition
    ) -> RunUpdate:
        """A status response (or webhook body) as an update; an unknown status reads as running. A
        failure carries the cost of the usage it reports (``usage`` costing: what the API billed)."""
        try:
            value = select(body, spec.path)
        except PathError:
            raise ServiceError(f"{what} answered without a status at {spec.path!r}", retryable=True,
                               code="bad_response") from None
        text = str(value)
        progress = None
        if spec.progress:
            try:
                progress = fraction(select(body, spec.progress))
            except PathError:
                progress = None
        if text in spec.succeeded:
            return RunUpdate(status=GenerationStatus.COMPLETED, progress=1.0, live_status=text, platform_run_id=platform_id)
        if text in spec.cancelled:
            return RunUpdate(status=GenerationStatus.CANCELLED, live_status=text, platform_run_id=platform_id)
        if text in spec.failed:
            detail = None
            if spec.error:
                try:
                    found = select(body, spec.error)
                    detail = found if isinstance(found, str) else (json.dumps(found) if found is not None else None)
                except PathError:
                    detail = None
            detail = detail or message_of(body, call.errors) or "no reason given"
            detail = self.endpoint.scrub(detail)[:500]
            code = "moderation" if is_moderation(detail, call.errors) else "failed"
            error = ServiceError(f"{what}: run {platform_id} {text}: {detail}", code=code).info()
            model = tool.costing_model
            cost = usage_cost(model, body) if model is not None and model.rate_source is RateSource.USAGE else None
            return RunUpdate(status=GenerationStatus.FAILED, live_status=text, platform_run_id=platform_id, error=error,
                             cost_usd=cost or None)
        return RunUpdate(status=GenerationStatus.PROCESSING, progress=progress, live_status=text[:200],
                         platform_run_id=platform_id)

    async def poll(self, gen: GenerationContext) -> RunUpdate:
        tool = gen.tool
        call = self.call_of(tool)
        asynchronous = self._async(call, tool)
        what = self._what(tool)
        platform_id = gen.platform_run_id
        if not platform_id:
            raise ServiceError(f"generation {gen.generation_id} has no run id at {self.name}", code="lost")
        built = await self._renderer(gen, id=platform_id).build(asynchronous.poll, self.endpoint, "async.poll")
        response, _ = await self._send(built, asynchronous.poll, what, sent_matters=False)
        if response.status_code == 404:
            raise ServiceError(f"{what} no longer knows run {platform_id}", retryable=True, code="lost")
        if response.status_code >= 400:
            raise self._failure(call, response, what)
        if asynchronous.poll_format == "sse":
            body = read_body(response, "sse", what)  # an error event raises the run's failure
            done = RunUpdate(status=GenerationStatus.COMPLETED, progress=1.0, live_status="complete",
                             platform_run_id=platform_id)
            return await self._finish(gen, call, done, body, built=built, response=response)
        body = read_body(response, "json", what)
        assert asynchronous.status is not None
        update = self._status(asynchronous.status, call, body.value, platform_id, what, tool)
        if not update.status.terminal:
            return update
        if asynchronous.result is not None:
            return await self._finish(gen, call, update, None)
        return await self._finish(gen, call, update, body, built=built, response=response)

    @staticmethod
    def _async(call: HttpCall, tool: ToolDefinition) -> AsyncSpec:
        if call.async_ is None:
            raise ServiceError(f"tool {tool.tool_id} is synchronous: it has no run to poll", code="not_pollable")
        return call.async_

    # webhooks -----------------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        raise WebhookRejected("http webhooks are read by the rules of the generation's tool (parse_webhook_for)")

    def parse_webhook_for(self, gen: GenerationContext, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        """Read a webhook body by the tool's rules. Pure; raises ``WebhookRejected`` on garbage."""
        try:
            call = self.call_of(gen.tool)
        except ServiceError as exc:
            raise WebhookRejected(exc.message) from None
        asynchronous = call.async_
        if asynchronous is None:
            raise WebhookRejected(f"tool {gen.tool.tool_id} is synchronous and takes no webhooks")
        hook = asynchronous.webhook
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise WebhookRejected("the body is not JSON") from None
        if not isinstance(data, dict):
            raise WebhookRejected("the body is not a JSON object")
        id_path = (hook.id if hook else None) or asynchronous.id
        try:
            platform_id = self._platform_id(data, id_path, "the webhook")
        except ServiceError:
            raise WebhookRejected(f"the body has no run id at {id_path!r}") from None
        spec = (hook.status if hook else None) or asynchronous.status
        if spec is None:
            raise WebhookRejected("the tool says nothing about webhook statuses")
        try:
            value = select(data, spec.path)
        except PathError:
            raise WebhookRejected(f"the body has no status at {spec.path!r}") from None
        known = {*spec.running, *spec.succeeded, *spec.failed, *spec.cancelled}
        if str(value) not in known:
            raise WebhookRejected(f"unknown status {value!r}")
        try:
            update = self._status(spec, call, data, platform_id, self._what(gen.tool), gen.tool)
        except ServiceError as exc:
            raise WebhookRejected(exc.message) from None
        raw: dict[str, Any] = {"service": self.name, "webhook": summary(data, self.endpoint), "platformRunId": platform_id}
        if update.status is GenerationStatus.COMPLETED and not (hook and hook.fetch_result):
            outputs_at = hook.outputs_at if hook else None
            try:
                raw[_BODY] = select(data, outputs_at) if outputs_at else data
            except PathError:
                raise WebhookRejected(f"the body has no outputs at {outputs_at!r}") from None
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return WebhookUpdate(
            platform_run_id=platform_id,
            update=update.model_copy(update={"raw": raw}),
            event_key=hashlib.sha256(canonical.encode()).hexdigest(),
        )

    async def finalize(self, gen: GenerationContext, update: RunUpdate) -> RunUpdate:
        """Complete a terminal update from a webhook before it is stored: a success gets its outputs
        (from the webhook's body, else fetched) and its cost; the body itself is not kept."""
        raw = dict(update.raw or {})
        carried = raw.pop(_BODY, None)
        update = update.model_copy(update={"raw": raw})
        if update.status is not GenerationStatus.COMPLETED or update.outputs is not None:
            return update
        call = self.call_of(gen.tool)
        return await self._finish(gen, call, update, Body(carried, "application/json") if carried is not None else None)

    # results ----------------------------------------------------------------------------------

    async def _finish(
        self,
        gen: GenerationContext,
        call: HttpCall,
        update: RunUpdate,
        body: Body | None,
        *,
        built: Built | None = None,
        response: httpx.Response | None = None,
    ) -> RunUpdate:
        """A terminal update completed: a success's outputs read from ``body`` (a status response,
        a webhook's payload, a sync answer), else from the result request (``async.result``), else
        from a fresh status response; and its cost. A response that lacks a declared output fails
        the generation, not retryably: it was paid for."""
        if update.status is not GenerationStatus.COMPLETED:
            return update
        what = self._what(gen.tool)
        asynchronous = call.async_
        raw = dict(update.raw or {})
        if body is None:
            if asynchronous is None:
                raise ServiceError(f"{what}: a success without an answer to read", retryable=True, code="not_ready")
            platform_id = update.platform_run_id or gen.platform_run_id or ""
            spec = asynchronous.result or asynchronous.poll
            label = "async.result" if asynchronous.result is not None else "async.poll"
            built = await self._renderer(gen, id=platform_id).build(spec, self.endpoint, label)
            response, _ = await self._send(built, spec, what, sent_matters=False)
            if response.status_code >= 400:
                error = self._failure(call, response, what)
                if error.retryable:
                    raise error
                cost = input_cost(gen.tool.costing_model, with_defaults(gen.tool, gen.inputs))  # it ran: paid
                return update.model_copy(update={"status": GenerationStatus.FAILED, "error": error.info(), "outputs": None,
                                                 "cost_usd": cost or None})
            fmt = call.format if asynchronous.result is not None else asynchronous.poll_format
            body = read_body(response, fmt, what)
        raw.update(self._raw(built, response, body.value))
        try:
            return await self._completed(gen, call, body, raw, base=update)
        except ServiceError as exc:
            if exc.retryable:
                raise
            return update.model_copy(update={"status": GenerationStatus.FAILED, "error": exc.info(), "outputs": None,
                                             "raw": raw, "cost_usd": self._cost(gen, body) or None})

    async def _completed(
        self, gen: GenerationContext, call: HttpCall, body: Body, raw: dict[str, Any], *, base: RunUpdate | None = None
    ) -> RunUpdate:
        for refusal in call.refusals:
            try:
                found = select(body.value, refusal.path)
            except PathError:
                continue
            if found in (None, "", False, [], {}) or (refusal.equals is not None and str(found) != refusal.equals):
                continue
            detail = found if isinstance(found, str) and refusal.equals is None else f"{refusal.path} is {found!r}"
            raise ServiceError(f"{self._what(gen.tool)} refused on content grounds (moderation): "
                               f"{self.endpoint.scrub(str(detail))[:500]}", code="moderation")
        outputs: dict[str, Any] = {}
        for param in gen.tool.output_schema:
            spec = call.outputs.get(param.name)
            if spec is None:
                spec = OutputSpec(path=None if body.binary or isinstance(body.value, str) else param.name)
            try:
                value = select(body.value, spec.path)
            except PathError:
                value = None
            if value in (None, "", []):
                if spec.optional:
                    continue
                where = f"at {spec.path!r}" if spec.path else "in its body"
                raise ServiceError(f"{self._what(gen.tool)} answered without output {param.name!r} ({where})",
                                   code="bad_response")
            outputs[param.name] = await read_output(param, value, spec, body, self.host, self.endpoint,
                                                    self.settings.media_max_bytes)
        update = (base or RunUpdate(status=GenerationStatus.COMPLETED)).model_copy(
            update={"status": GenerationStatus.COMPLETED, "progress": 1.0, "outputs": outputs, "raw": raw}
        )
        cost = self._cost(gen, body)
        if cost is not None:
            update = update.model_copy(update={"cost_usd": cost})
        return update

    def _cost(self, gen: GenerationContext, body: Body) -> Decimal | None:
        model = gen.tool.costing_model
        if model is None:
            return None
        if model.rate_source is RateSource.STATIC and model.static_cost is not None:
            return model.static_cost.amount
        if model.rate_source is RateSource.TABLE and model.price_table is not None:
            return table_price(model.price_table, with_defaults(gen.tool, gen.inputs))
        if model.rate_source is RateSource.USAGE:
            return usage_cost(model, body.value)
        return None  # per second and per output unit: the engine computes them

    # cancel -----------------------------------------------------------------------------------

    async def cancel(self, gen: GenerationContext) -> None:
        call = self.call_of(gen.tool)
        if call.async_ is None or call.async_.cancel is None or not gen.platform_run_id:
            return
        spec = call.async_.cancel
        built = await self._renderer(gen, id=gen.platform_run_id).build(spec, self.endpoint, "async.cancel")
        response, _ = await self._send(built, spec, self._what(gen.tool), sent_matters=False)
        if response.status_code >= 400 and response.status_code not in (404, 409, 410):
            raise self._failure(call, response, self._what(gen.tool))

    async def close(self) -> None:
        return None
