"""The ``comfydeploy`` service: deployments on the hosted ComfyUI Deploy, through its v2 API.

A tool names its deployment in ``metadata.deploymentId``; its inputs are sent keyed by the tool's
input names, which are the deployment's ``input_id``s (the workflow's External* nodes). Media
inputs travel as URLs (``host.media_url``: a public URL, else a ``data:`` URI). Optional
metadata: ``gpu`` (machine class for the run), ``keepOutputUrls`` (true: outputs stay the
backend's URLs instead of being downloaded into the artifact store), ``outputMap`` (as for
``comfyui``; entries may also select by ``outputId``), ``concurrency`` (in-flight limit).

- ``submit``: marks the generation (``gen.sending()``), then ``POST /run/deployment/queue``
  with ``deployment_id``, ``inputs``, ``webhook`` =
  ``gen.webhook_url`` (the engine's URL with the per-generation token, e.g.
  ``https://host/webhooks/comfydeploy/<generation id>?token=<token>``; it is passed through
  unchanged) and ``webhook_intermediate_status`` so progress arrives too.
- ``poll``: ``GET /run/{id}`` — the fallback for lost webhooks.
- ``cancel``: ``POST /run/{id}/cancel``.
- ``parse_webhook(headers, body)``: a pure function of the body (the engine verifies the token
  first, deduplicates with ``event_key`` and ignores updates after a terminal state). It never
  names outputs: the backend's output rows are kept in ``raw["outputs"]``, and
  ``finalize(gen, update)`` — which the engine awaits before storing a terminal update — names
  them per the tool and downloads them into artifacts.

The API key comes from ``settings.comfydeploy_api_key``; it is sent only as the Authorization
header to the API (never to output URLs) and never appears in a message, a log line or ``raw``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from toolweave.artifacts import media_problem
from toolweave.model.definitions import RateSource, ToolDefinition
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.netguard import MEDIA_SETTING, ForbiddenURL, TooManyRedirects, UnresolvableHost, stream_public
from toolweave.services.base import (
    GenerationContext,
    ServiceError,
    ServiceHost,
    Submission,
    WebhookRejected,
    WebhookUpdate,
    read_at_most,
    retry_after_header,
)
from toolweave.services.comfy_workflows import OutputItem, media_of, select_outputs
from toolweave.settings import Settings

log = logging.getLogger(__name__)

STATUSES: dict[str, GenerationStatus] = {
    "not-started": GenerationStatus.PROCESSING,
    "queued": GenerationStatus.PROCESSING,
    "started": GenerationStatus.PROCESSING,
    "running": GenerationStatus.PROCESSING,
    "uploading": GenerationStatus.PROCESSING,
    "success": GenerationStatus.COMPLETED,
    "failed": GenerationStatus.FAILED,
    "timeout": GenerationStatus.TIMEOUT,
    "cancelled": GenerationStatus.CANCELLED,
}
"""ComfyUI Deploy's run statuses (``WorkflowRunStatus``) and ours."""

WHOLE_ANSWER_TIMEOUTS = 10
"""An output file is downloaded whole within this many ``http_timeout_seconds`` (each read has the
timeout; storage that drips a file is not waited for without end)."""
MAX_RUN_SECONDS = 366 * 86400
"""The longest ``runDuration`` a cost is computed from (a longer one is nonsense from the backend)."""

_RAW_FIELDS = {
    "gpu": "gpu",
    "machine_type": "machineType",
    "duration": "duration",
    "run_duration": "runDuration",
    "cold_start_duration": "coldStartDuration",
    "queue_position": "queuePosition",
}


def _progress(value: Any) -> float | None:
    """Progress as 0..1 (the backend sends 0..1; its hand-written docs claim 0..100)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WebhookRejected(f"progress must be a number, not {type(value).__name__}")
    if 0 <= value <= 1:
        return float(value)
    if 1 < value <= 100:
        return float(value) / 100
    raise WebhookRejected(f"progress {value} is out of range")


def items_from_rows(rows: list[Any]) -> list[OutputItem]:
    """The items of ComfyUI Deploy output rows (``{data: {kind: [...]}, node_meta, output_id}``)."""
    items: list[OutputItem] = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("data"), dict):
            continue
        meta = row.get("node_meta") if isinstance(row.get("node_meta"), dict) else {}
        assert isinstance(meta, dict)
        node = str(meta.get("node_id") or row.get("node_id") or "")
        for kind, values in row["data"].items():
            if kind == "animated" or not isinstance(values, list):
                continue
            for value in values:
                if isinstance(value, bool) or not isinstance(value, (dict, str)):
                    continue
                if isinstance(value, dict) and not value.get("url"):
                    continue
                media = media_of(kind, value)
                if media == "other":
                    continue
                output_id = (value.get("output_id") if isinstance(value, dict) else None) or row.get(
                    "output_id"
                )
                items.append(OutputItem(node, kind, media, value, output_id))
    return items


class ComfyDeployService:
    name = "comfydeploy"
    marks_sending = True
    """``submit`` awaits ``gen.sending()`` right before it queues the run (``Service``)."""

    def __init__(self, host: ServiceHost, settings: Settings) -> None:
        self.host = host
        self.settings = settings
        self.timeout = settings.http_timeout_seconds
        self.base_url = settings.comfydeploy_base_url.rstrip("/")
        self._key = settings.comfydeploy_api_key

    def capacity(self, tool: ToolDefinition) -> tuple[str, int]:
        limit = tool.metadata.get("concurrency")
        return "comfydeploy", int(limit) if isinstance(limit, int) and limit > 0 else 10

    # HTTP --------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def _api(self, method: str, path: str, *, json_body: Any = None) -> Any:
        if not self._key:
            raise ServiceError(
                "no ComfyUI Deploy API key is configured (set comfydeploy_api_key / TOOLWEAVE_COMFYDEPLOY_API_KEY)",
                code="not_configured",
            )
        import httpx  # here, not with the module: every App makes this service, most runs never call it

        try:
            response = await self.host.http.request(
                method,
                self.base_url + path,
                json=json_body,
                headers={"Authorization": f"Bearer {self._key}"},
                timeout=self.timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # nothing reached it
            raise ServiceError(f"ComfyUI Deploy could not be reached for {method} {path}: {type(exc).__name__}",
                               retryable=True, code="unreachable") from None
        except httpx.HTTPError as exc:  # the request went out (or began to): no answer came
            raise ServiceError(f"ComfyUI Deploy did not answer {method} {path}: {type(exc).__name__}",
                               retryable=True, code="no_answer") from None
        try:
            data = response.json() if response.content else None
        except (ValueError, RecursionError):
            data = None
        if response.status_code < 400:
            if data is None:
                raise ServiceError(
                    f"ComfyUI Deploy answered {method} {path} without JSON",
                    retryable=True,
                    code="bad_response",
                )
            return data
        message = self._scrub(self._error_text(data) or f"HTTP {response.status_code}")
        status = response.status_code
        if status in (401, 403):
            raise ServiceError(
                f"ComfyUI Deploy rejected the API key (HTTP {status}): {message}", code="unauthorized"
            )
        if status == 429:
            raise ServiceError(
                f"ComfyUI Deploy is rate limiting {method} {path} (HTTP 429): {message}", retryable=True,
                code="rate_limited", retry_after=retry_after_header(response.headers.get("retry-after"), time.time()),
            )
        raise ServiceError(
            f"ComfyUI Deploy refused {method} {path} (HTTP {status}): {message}",
            retryable=status >= 500 or status in (408, 409),
            code="not_found" if status == 404 else ("server_error" if status >= 500 else "rejected"),
            retry_after=retry_after_header(response.headers.get("retry-after"), time.time()) if status >= 500 else None,
        )

    @staticmethod
    def _error_text(data: Any) -> str | None:
        if not isinstance(data, dict):
            return None
        detail = data.get("detail", data.get("message", data.get("error")))
        if isinstance(detail, list):  # FastAPI validation errors
            parts = []
            for err in detail:
                if isinstance(err, dict):
                    loc = ".".join(str(p) for p in err.get("loc", []) if p != "body")
                    parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
            return "; ".join(parts) or None
        return str(detail) if detail is not None else None

    # submit ------------------------------------------------------------------------------------

    def _input_value(self, value: Any) -> Any:
        ref = ArtifactRef.from_value(value)
        if ref is not None:
            return self.host.media_url(ref)
        if isinstance(value, list):
            return [self._input_value(v) for v in value]
        return value

    async def submit(self, gen: GenerationContext) -> Submission:
        tool = gen.tool
        deployment_id = tool.metadata.get("deploymentId")
        if not isinstance(deployment_id, str) or not deployment_id:
            raise ServiceError(f"tool {tool.tool_id}: metadata.deploymentId is required for comfydeploy")
        if gen.recovering:
            raise ServiceError(
                f"generation {gen.generation_id} may already have been queued on ComfyUI Deploy, which takes "
                "no client-chosen run id; not queueing it again to avoid paying twice",
                code="unknown_outcome",
            )
        inputs = {name: self._input_value(v) for name, v in gen.inputs.items() if v is not None}
        body: dict[str, Any] = {"deployment_id": deployment_id, "inputs": inputs}
        if gen.webhook_url:
            body["webhook"] = gen.webhook_url
            body["webhook_intermediate_status"] = True
        if tool.metadata.get("gpu"):
            body["gpu"] = str(tool.metadata["gpu"])
        await gen.sending()  # durably: a crash from here on leaves the outcome unknown
        try:
            data = await self._api("POST", "/run/deployment/queue", json_body=body)
        except ServiceError as exc:
            if exc.code == "no_answer":  # it may have queued the run: queueing again may pay twice
                raise ServiceError(f"{exc.message}; it may have queued the run, and be running and paid for it, "
                                   "with no id to follow it by: not queued again", code="unknown_outcome",
                                   details={"cause": "no_answer", "maybePaid": True}) from None
            if exc.code != "bad_response":
                raise
            data = None  # a 2xx without JSON: taken, as below
        run_id = data.get("run_id") if isinstance(data, dict) else None
        if not isinstance(run_id, str) or not run_id:
            # it took the run (2xx): queueing it again would run and pay for it twice
            raise ServiceError(
                "ComfyUI Deploy took the run (HTTP 2xx) without a usable run_id; it may be running, and paid "
                "for, with no id to follow it by: not queued again",
                code="bad_response", details={"maybePaid": True},
            )
        return Submission(
            platform_run_id=run_id,
            update=RunUpdate(
                status=GenerationStatus.PROCESSING,
                progress=0.0,
                live_status="queued",
                platform_run_id=run_id,
                raw={"runId": run_id, "deploymentId": deployment_id},
            ),
            poll_after_seconds=60.0 if gen.webhook_url else 5.0,
        )

    # updates -----------------------------------------------------------------------------------

    @staticmethod
    def update_from_body(body: Mapping[str, Any]) -> RunUpdate:
        """A normalised update from a run (``GET /run/{id}``) or a webhook body; outputs unnamed."""
        run_id = body.get("run_id", body.get("id"))
        if not isinstance(run_id, str) or not run_id:
            raise WebhookRejected("run_id is missing")
        status_text = body.get("status")
        if not isinstance(status_text, str) or status_text not in STATUSES:  # (a list is not even hashable)
            raise WebhookRejected(f"unknown status {str(status_text)[:100]!r}")
        assert isinstance(status_text, str)
        status = STATUSES[status_text]
        live = body.get("live_status")
        if live is not None and not isinstance(live, str):
            raise WebhookRejected("live_status must be a string")
        outputs = body.get("outputs")
        if outputs is None:
            outputs = []
        if not isinstance(outputs, list):
            raise WebhookRejected("outputs must be a list")
        raw: dict[str, Any] = {"runId": run_id, "status": status_text}
        for source, target in _RAW_FIELDS.items():
            if body.get(source) is not None:
                raw[target] = body[source]
        if body.get("event_type") is not None:
            raw["eventType"] = body["event_type"]
        progress = _progress(body.get("progress"))
        error = None
        if status is GenerationStatus.COMPLETED:
            raw["outputs"] = outputs
            progress = 1.0
        elif status in (GenerationStatus.FAILED, GenerationStatus.TIMEOUT):
            what = "timed out" if status is GenerationStatus.TIMEOUT else "failed"
            detail = f": {live}" if live else ""
            error = ServiceError(
                f"ComfyUI Deploy run {run_id} {what}{detail}",
                retryable=status is GenerationStatus.TIMEOUT,
                code=status_text,
            ).info()
        return RunUpdate(
            status=status,
            progress=progress,
            live_status=live or status_text,
            platform_run_id=run_id,
            error=error,
            raw=raw,
        )

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        """Parse one webhook POST. Pure: no I/O, no state; raises ``WebhookRejected`` on garbage."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise WebhookRejected("the body is not JSON") from None
        if not isinstance(data, dict):
            raise WebhookRejected("the body is not a JSON object")
        event_type = data.get("event_type")
        if event_type is not None and event_type not in ("run.updated", "run.output"):
            raise WebhookRejected(f"unknown event_type {event_type!r}")
        update = self.update_from_body(data)
        if event_type == "run.output" and update.status.terminal:
            # A per-output event carries the stored status; it is not itself a state change.
            update = update.model_copy(update={"status": GenerationStatus.PROCESSING, "error": None})
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        key = hashlib.sha256(canonical.encode()).hexdigest()
        assert update.platform_run_id is not None
        return WebhookUpdate(platform_run_id=update.platform_run_id, update=update, event_key=key)

    async def poll(self, gen: GenerationContext) -> RunUpdate:
        run_id = gen.platform_run_id
        if not run_id:
            raise ServiceError(f"generation {gen.generation_id} has no ComfyUI Deploy run id", code="lost")
        try:
            data = await self._api("GET", f"/run/{run_id}")
        except ServiceError as exc:
            if exc.code == "not_found":
                raise ServiceError(
                    f"ComfyUI Deploy has no run {run_id}", retryable=True, code="lost"
                ) from None
            raise
        if not isinstance(data, dict):
            raise ServiceError("ComfyUI Deploy answered the run with something else", retryable=True)
        try:
            update = self.update_from_body(data)
        except WebhookRejected as exc:
            raise ServiceError(
                f"ComfyUI Deploy run {run_id}: {exc}", retryable=True, code="bad_response"
            ) from None
        return await self.finalize(gen, update, fetched=True)

    async def finalize(
        self, gen: GenerationContext, update: RunUpdate, *, fetched: bool = False
    ) -> RunUpdate:
        """Complete a terminal update before it is stored: outputs named and downloaded, cost.

        Non-terminal updates are returned as they are. A success whose body carried no outputs,
        or that lacks timing, is completed from ``GET /run/{id}``. Download failures raise a
        retryable ``ServiceError`` (the engine polls again).
        """
        if not update.status.terminal:
            return update
        raw = dict(update.raw or {})
        run_id = update.platform_run_id or gen.platform_run_id
        needs_outputs = update.status is GenerationStatus.COMPLETED and not raw.get("outputs")
        if not fetched and run_id and (needs_outputs or "runDuration" not in raw):
            try:
                data = await self._api("GET", f"/run/{run_id}")
                fresh = self.update_from_body(data) if isinstance(data, dict) else None
            except (ServiceError, WebhookRejected) as exc:
                if needs_outputs:
                    raise ServiceError(
                        f"ComfyUI Deploy run {run_id} succeeded but its outputs could not be read: {exc}",
                        retryable=True,
                        code="not_ready",
                    ) from None
                fresh = None
            if fresh is not None and fresh.raw:
                for key, value in fresh.raw.items():
                    if key in ("outputs", "status"):
                        continue
                    raw.setdefault(key, value)
                if needs_outputs and fresh.raw.get("outputs"):
                    raw["outputs"] = fresh.raw["outputs"]
        changes: dict[str, Any] = {"raw": raw}
        outputs_rows = raw.get("outputs") or []
        if update.status is GenerationStatus.COMPLETED:
            try:
                chosen = select_outputs(items_from_rows(outputs_rows), gen.tool)
                changes["outputs"] = await self._materialise(gen, chosen)
            except ServiceError as exc:
                if exc.retryable:
                    raise
                changes.update(status=GenerationStatus.FAILED, error=exc.info(), outputs=None)
        cost = self._cost(gen.tool, raw, changes.get("outputs"))
        if cost is not None:
            changes["cost_usd"] = cost
        return update.model_copy(update=changes)

    async def _materialise(
        self, gen: GenerationContext, chosen: Mapping[str, OutputItem | list[OutputItem]]
    ) -> dict[str, Any]:
        keep = gen.tool.metadata.get("keepOutputUrls") is True
        values: dict[str, Any] = {}
        for name, pick in chosen.items():
            picks = pick if isinstance(pick, list) else [pick]
            got = [await self._output_value(item, keep, name, gen.tool) for item in picks]
            values[name] = got if isinstance(pick, list) else got[0]
        return values

    async def _output_value(self, item: OutputItem, keep_url: bool, name: str, tool: ToolDefinition) -> Any:
        """An output row's value: its file downloaded into the artifact store (up to
        ``media_max_bytes``: a larger one is not read to its end) and checked against the output's
        declared type (a storage error page answered with HTTP 200 is not stored as an image)."""
        if not isinstance(item.item, dict):
            return item.item
        url = str(item.item["url"])
        if keep_url:
            return url
        import httpx

        shown = item.item.get("filename") or "file"
        limit = self.settings.media_max_bytes
        try:
            # No Authorization header: output URLs are storage URLs, not the API.
            # public hosts only, every redirect checked, as for a user's media URL: the URL is the
            # backend's word, and what it answers becomes the account's artifact
            async with asyncio.timeout(self.timeout * WHOLE_ANSWER_TIMEOUTS), stream_public(
                self.host.http, url, allow_private=self.settings.media_allow_private_urls, setting=MEDIA_SETTING,
                timeout=self.timeout,
            ) as response:
                if response.status_code >= 400:
                    raise ServiceError(
                        f"output {shown} could not be downloaded (HTTP {response.status_code})",
                        retryable=response.status_code >= 500 or response.status_code in (403, 404),
                        code="download_failed",
                    )
                data = await read_at_most(response.aiter_bytes(), limit, lambda: ServiceError(
                    f"output {name!r} ({shown}) is larger than media_max_bytes ({limit} bytes); not downloaded",
                    code="too_large",
                ))
                mime = response.headers.get("content-type", "").split(";", 1)[0].strip()
        except (ForbiddenURL, TooManyRedirects) as exc:
            raise ServiceError(f"output {name!r} ({shown}) was not downloaded: {exc}", code="download_refused") from None
        except UnresolvableHost as exc:
            raise ServiceError(f"output {name!r} ({shown}) could not be downloaded: {exc}", retryable=True,
                               code="download_failed") from None
        except TimeoutError:
            raise ServiceError(
                f"output {shown} was not downloaded within {self.timeout * WHOLE_ANSWER_TIMEOUTS:.0f} s",
                retryable=True, code="download_failed",
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"output {shown} could not be downloaded: {type(exc).__name__}",
                retryable=True,
                code="download_failed",
            ) from None
        param = tool.output(name)
        problem = media_problem(param.type.value, data) if param is not None else None
        if problem:
            raise ServiceError(f"output {name!r} ({shown}) {problem}; its storage answered something else than the file",
                               code="bad_output")
        if mime in ("", "application/octet-stream", "binary/octet-stream"):
            mime = ""
        filename = item.item.get("filename")
        ref = await asyncio.to_thread(
            self.host.artifacts.put_bytes, data, mime or None, str(filename) if filename else None
        )
        return ref.as_value()

    def _cost(self, tool: ToolDefinition, raw: Mapping[str, Any], outputs: Any) -> Decimal | None:
        model = tool.costing_model
        if model is None:
            return None
        if model.rate_source is RateSource.STATIC and model.static_cost is not None:
            return model.static_cost.amount
        if model.rate_source is RateSource.MACHINE:
            seconds = raw.get("runDuration", raw.get("duration"))
            # a duration that cannot be one (NaN, infinite, negative, longer than a year) prices nothing
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_RUN_SECONDS:
                return None
            rate = model.rate
            if rate is None:
                machine = str(raw.get("gpu") or model.machine_class or "")
                rate = self.settings.machine_rates.get(machine) or self.settings.machine_rates.get(
                    str(model.machine_class or "")
                )
            if rate is None:
                return None
            return (Decimal(str(seconds)) * rate).quantize(Decimal("0.000001"))
        if model.rate_source is RateSource.OUTPUT_UNIT and model.unit_cost is not None and outputs:
            counted = outputs.get(model.unit_output) if model.unit_output else None
            units = (
                len(counted) if isinstance(counted, list) else (1 if counted is not None else len(outputs))
            )
            return model.unit_cost.amount * units
        return None

    async def cancel(self, gen: GenerationContext) -> None:
        if not gen.platform_run_id:
            return
        await self._api("POST", f"/run/{gen.platform_run_id}/cancel")

    async def close(self) -> None:
        return None

    # sync ---------------------------------------------------------------------------------------

    async def list_deployments(self) -> list[dict[str, Any]]:
        """The account's deployments (``GET /deployments``)."""
        data = await self._api("GET", "/deployments")
        if isinstance(data, dict):
            data = data.get("deployments", data.get("data", []))
        if not isinstance(data, list):
            raise ServiceError("ComfyUI Deploy answered /deployments with something else", retryable=True)
        return [d for d in data if isinstance(d, dict)]
