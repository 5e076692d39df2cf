"""The ``comfyui`` service: workflows on a self-hosted ComfyUI server, through its native API.

A tool names its workflow (API format) in ``metadata.workflow`` — a dict, or a path resolved
against the definition file's folder — and says where its inputs go in ``metadata.inputMap``
(``{toolInput: {"node": id, "input": name}}``, or a list of such targets). Without an input map,
the workflow's ComfyUI Deploy ``External*`` nodes are the inputs, keyed by their ``input_id``, so
one workflow file serves both backends. ``metadata.outputMap`` (``{toolOutput: {"node": id,
"kind": "images"}}``) picks outputs; without it, outputs are matched to the tool's outputSchema
by type. ``metadata.server`` names a configured server (else the default one).

How a generation runs:

- ``submit`` uploads media inputs through ``/upload/image`` (content-hash file names, so a repeat
  upload is a no-op), then posts the prompt with ``prompt_id`` = the generation id and the
  service's ``client_id``, marking the generation right before the post (``gen.sending()``). A
  non-empty ``node_errors`` is a failure even with HTTP 200. When the engine says it is
  ``recovering`` (an earlier submit got as far as its mark), the service first looks for the
  prompt in history and queue and re-attaches instead of submitting again.
- One websocket per configured server (started lazily, reconnecting with backoff) turns
  progress messages into ``RunUpdate``s pushed through ``host.report``; ``executing`` with
  ``node: null`` for one of our prompts means it finished: history and outputs are fetched and
  the terminal update is reported. No coroutine waits per run.
- ``poll`` is the fallback: ``/history/{id}``, then ``/queue``; a prompt in neither (history is
  in the server's memory) raises a retryable ``ServiceError`` with code ``lost``.
- ``cancel`` deletes the prompt from the queue and interrupts it if it is running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from toolweave import comfy
from toolweave.artifacts import media_problem
from toolweave.comfy.objectinfo import shown_url
from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import ArtifactRef, RunUpdate
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
from toolweave.services.comfy_workflows import (
    EXTERNAL_PREFIX,
    InputTarget,
    OutputItem,
    external_input_map,
    input_map,
    items_from_history,
    load_workflow,
    select_outputs,
)
from toolweave.services.comfyui_stream import _Listener, _Streaming, _Tracked
from toolweave.settings import ComfyServer, Settings

if TYPE_CHECKING:  # httpx itself is imported with the first request (every App makes this service)
    import httpx

log = logging.getLogger(__name__)

UPLOAD_SUBFOLDER = "toolweave"
WHOLE_ANSWER_TIMEOUTS = 10
"""An answer (or an output file) is read whole within this many ``http_timeout_seconds``: each read
has the timeout, and a server that drips its answer is not waited for without end."""
MAX_ANSWER_BYTES = 64 * 2**20
"""The largest answer of the server's API (history, queue, prompt) that is read; output files have
``media_max_bytes``."""


# --- the service ---------------------------------------------------------------------------------


def _error_summary(node_errors: Mapping[str, Any]) -> tuple[str | None, str]:
    """The first failing node and a readable message naming every node's problems."""
    parts = []
    first: str | None = None
    for node_id, entry in node_errors.items():
        first = first or str(node_id)
        class_type = entry.get("class_type", "?") if isinstance(entry, dict) else "?"
        errors = entry.get("errors", []) if isinstance(entry, dict) else []
        messages = []
        for err in errors:
            if not isinstance(err, dict):
                continue
            text = str(err.get("message", "error"))
            details = err.get("details")
            messages.append(f"{text}: {details}" if details else text)
        parts.append(f"node {node_id} ({class_type}): {'; '.join(messages) or 'invalid'}")
    return first, "; ".join(parts)


class ComfyUIService(_Streaming):
    """The native ComfyUI API. One instance serves every configured server."""

    name = "comfyui"
    marks_sending = True
    """``submit`` awaits ``gen.sending()`` right before it posts the prompt (``Service``)."""

    def __init__(self, host: ServiceHost, settings: Settings) -> None:
        self.host = host
        self.settings = settings
        self.timeout = settings.http_timeout_seconds
        self.client_id = uuid.uuid4().hex
        self.servers = {s.name: s for s in settings.comfyui_servers}
        self.default_server = settings.comfyui_default_server or (
            settings.comfyui_servers[0].name if settings.comfyui_servers else None
        )
        self._listeners: dict[str, _Listener] = {}
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._finishing: set[asyncio.Task[None]] = set()
        self._closed = False

    # servers -----------------------------------------------------------------------------------

    def server_for(self, tool: ToolDefinition) -> ComfyServer:
        name = tool.metadata.get("server") or self.default_server
        if not self.servers:
            raise ServiceError(
                "no ComfyUI server is configured (set comfyui_servers, e.g. TOOLWEAVE_COMFYUI_SERVERS=local=http://127.0.0.1:8188)",
                code="not_configured",
            )
        if name not in self.servers:
            known = ", ".join(sorted(self.servers))
            raise ServiceError(
                f"tool {tool.tool_id} names ComfyUI server {name!r}, which is not configured (known: {known})",
                code="not_configured",
            )
        return self.servers[str(name)]

    def capacity(self, tool: ToolDefinition) -> tuple[str, int]:
        """The concurrency key and limit of the server this tool runs on."""
        server = self.server_for(tool)
        return f"comfyui:{server.name}", max(1, server.concurrency)

    # HTTP --------------------------------------------------------------------------------------

    async def _request(self, server: ComfyServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call of the server's API; its answer read up to ``MAX_ANSWER_BYTES`` (a larger one
        is not read to its end: ``too_large``)."""
        import httpx

        url = server.base_url.rstrip("/") + path
        try:
            async with asyncio.timeout(self.timeout * WHOLE_ANSWER_TIMEOUTS), \
                    self.host.http.stream(method, url, timeout=self.timeout, **kwargs) as streamed:
                content = await read_at_most(streamed.aiter_bytes(), MAX_ANSWER_BYTES, lambda: ServiceError(
                    f"ComfyUI server {server.name} ({shown_url(server.base_url)}) answered {method} {path} "
                    f"with more than {MAX_ANSWER_BYTES} bytes; not read",
                    code="too_large",
                ))
            headers = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in ("content-encoding", "content-length")]
            response = httpx.Response(streamed.status_code, headers=headers, content=content, request=streamed.request)
        except TimeoutError:
            raise ServiceError(
                f"ComfyUI server {server.name} ({shown_url(server.base_url)}) did not finish answering {method} {path} "
                f"within {self.timeout * WHOLE_ANSWER_TIMEOUTS:.0f} s",
                retryable=True, code="timeout",
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"ComfyUI server {server.name} ({shown_url(server.base_url)}) did not answer {method} {path}: "
                f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}",
                retryable=True,
                code="unreachable",
            ) from exc
        if response.status_code >= 500:
            raise ServiceError(
                f"ComfyUI server {server.name} ({shown_url(server.base_url)}) failed {method} {path} with HTTP {response.status_code}",
                retryable=True,
                code="server_error",
            )
        return response

    @staticmethod
    def _json(response: httpx.Response, server: ComfyServer, what: str) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError) as exc:
            raise ServiceError(
                f"ComfyUI server {server.name} answered {what} with something that is not JSON",
                retryable=True,
                code="bad_response",
            ) from exc

    # submit ------------------------------------------------------------------------------------

    async def submit(self, gen: GenerationContext) -> Submission:
        server = self.server_for(gen.tool)
        prompt_id = gen.generation_id
        listener = self._listener(server)
        listener.start()
        workflow = load_workflow(gen.tool)
        if gen.recovering:
            found = await self._find(server, prompt_id)
            if found is not None:
                self._track(gen, server, workflow)
                if found == "history":
                    return Submission(platform_run_id=prompt_id, update=await self._from_history(gen, server))
                return Submission(
                    platform_run_id=prompt_id,
                    update=self._processing(prompt_id, found),
                    poll_after_seconds=self._poll_after(listener),
                )
        targets = input_map(gen.tool, workflow)
        values = {}
        for name, value in gen.inputs.items():
            if name not in targets or value is None:
                continue
            values[name] = await self._input_value(server, gen.tool, name, value, workflow, targets[name])
        raw_map = gen.tool.metadata.get("inputMap")
        if raw_map is None:
            raw_map = external_input_map(workflow)
        try:
            workflow = comfy.apply_inputs(workflow, raw_map, values)
        except ValueError as exc:
            raise ServiceError(f"tool {gen.tool.tool_id}: {exc}", code="bad_input_map") from None
        await listener.wait_connected(min(5.0, self.timeout))
        await gen.sending()  # durably: after a crash from here on, the prompt is looked for first
        self._track(gen, server, workflow)
        body = {"prompt": workflow, "client_id": self.client_id, "prompt_id": prompt_id}
        try:
            response = await self._request(server, "POST", "/prompt", json=body)
            data = self._json(response, server, "POST /prompt") if response.content else {}
        except ServiceError as exc:
            # no answer, a 5xx (a proxy that gave up waiting) or one that is not JSON: the prompt
            # may be queued all the same. Followed if it is, rather than failed while it runs (and
            # sent again by a retry)
            attached = await self._attach_after(gen, server, listener, workflow, exc)
            if attached is not None:
                return attached
            self._untrack(prompt_id)
            raise
        if not isinstance(data, dict):
            data = {}
        node_errors = data.get("node_errors") or {}
        if response.status_code >= 400 or node_errors:
            self._untrack(prompt_id)
            if response.status_code < 400:
                # Partially accepted: the valid outputs would run. Take it back.
                with contextlib.suppress(ServiceError):
                    await self._cancel_prompt(server, prompt_id)
            raise self._rejection(response.status_code, data, node_errors)
        return Submission(
            platform_run_id=str(data.get("prompt_id") or prompt_id),
            update=RunUpdate(
                status=GenerationStatus.PROCESSING,
                progress=0.0,
                live_status="queued",
                platform_run_id=prompt_id,
                raw={"server": server.name, "number": data.get("number")},
            ),
            poll_after_seconds=self._poll_after(listener),
        )

    async def _attach_after(
        self, gen: GenerationContext, server: ComfyServer, listener: _Listener, workflow: Any, failure: ServiceError
    ) -> Submission | None:
        """The submission of a prompt the server took although its answer to ``POST /prompt`` was
        a failure (``failure``); None when it is neither queued nor in the history."""
        prompt_id = gen.generation_id
        try:
            found = await self._find(server, prompt_id)
        except ServiceError:
            return None
        if found is None:
            return None
        log.warning("ComfyUI server %s queued prompt %s although its answer failed (%s); following it",
                    server.name, prompt_id, failure.message)
        self._track(gen, server, workflow)
        if found == "history":
            return Submission(platform_run_id=prompt_id, update=await self._from_history(gen, server))
        return Submission(platform_run_id=prompt_id, update=self._processing(prompt_id, found),
                          poll_after_seconds=self._poll_after(listener))

    @staticmethod
    def _rejection(status: int, data: Mapping[str, Any], node_errors: Mapping[str, Any]) -> ServiceError:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        assert isinstance(error, dict)
        node, detail = _error_summary(node_errors) if node_errors else (None, "")
        head = str(error.get("message") or ("validation failed" if node_errors else f"HTTP {status}"))
        if error.get("details") and not node_errors:
            head = f"{head} ({error['details']})"
        message = f"ComfyUI rejected the workflow: {head}" + (f": {detail}" if detail else "")
        return ServiceError(
            message,
            retryable=False,
            code=str(error.get("type") or "node_errors"),
            node=node,
            details={"node_errors": dict(node_errors)} if node_errors else None,
        )

    def _poll_after(self, listener: _Listener) -> float:
        return 30.0 if listener.connected.is_set() else 3.0

    @staticmethod
    def _processing(prompt_id: str, where: str) -> RunUpdate:
        return RunUpdate(status=GenerationStatus.PROCESSING, live_status=where, platform_run_id=prompt_id)

    async def _input_value(
        self,
        server: ComfyServer,
        tool: ToolDefinition,
        name: str,
        value: Any,
        workflow: Mapping[str, Any],
        targets: list[InputTarget],
    ) -> Any:
        param = tool.input(name)
        is_media = (param is not None and param.type.is_media) or ArtifactRef.is_ref(value)
        if not is_media:
            return value
        external = all(
            str(workflow.get(t.node, {}).get("class_type", "")).startswith(EXTERNAL_PREFIX) for t in targets
        )
        if external:
            # The comfyui-deploy nodes fetch a URL (or decode a data: URI) themselves.
            ref = ArtifactRef.from_value(value)
            return self.host.media_url(ref) if ref is not None else value
        return await self.upload(server, value, name=name, kind=param.type.value if param is not None else "file")

    async def upload(self, server: ComfyServer, value: Any, *, name: str = "media", kind: str = "file") -> str:
        """Upload a media value; returns the name a loader node takes (``subfolder/name``).

        The bytes are checked against the input's ``kind`` first: a file that is not an image
        is refused here rather than left on the server to fail when LoadImage opens it."""
        try:
            data, mime = await self.host.load_media(value)
        except ServiceError:
            raise
        except Exception as exc:
            raise ServiceError(f"cannot read a media input: {exc}", code="bad_input") from exc
        problem = media_problem(kind, data)
        if problem:
            raise ServiceError(f"input {name!r} {problem}; nothing was uploaded", code="bad_input")
        ext = mimetypes.guess_extension(mime) or ".bin"
        filename = f"tw_{hashlib.sha256(data).hexdigest()[:24]}{ext}"
        response = await self._request(
            server,
            "POST",
            "/upload/image",
            files={"image": (filename, data, mime)},
            data={"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"},
        )
        if response.status_code >= 400:
            raise ServiceError(
                f"ComfyUI server {server.name} refused the upload of {filename} (HTTP {response.status_code})",
                code="upload_failed",
            )
        body = self._json(response, server, "POST /upload/image")
        if not isinstance(body, dict) or "name" not in body:
            raise ServiceError(
                f"ComfyUI server {server.name} answered the upload without a name", retryable=True
            )
        sub = body.get("subfolder") or ""
        return f"{sub}/{body['name']}" if sub else str(body["name"])

    # poll --------------------------------------------------------------------------------------

    async def _history(self, server: ComfyServer, prompt_id: str) -> dict[str, Any] | None:
        response = await self._request(server, "GET", f"/history/{prompt_id}")
        data = self._json(response, server, "GET /history")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    async def _queue_place(self, server: ComfyServer, prompt_id: str) -> str | None:
        response = await self._request(server, "GET", "/queue")
        data = self._json(response, server, "GET /queue")
        if not isinstance(data, dict):
            return None
        if any(
            isinstance(i, list) and len(i) > 1 and i[1] == prompt_id for i in data.get("queue_running", [])
        ):
            return "running"
        pending = [i for i in data.get("queue_pending", []) if isinstance(i, list) and len(i) > 1]
        pending.sort(key=lambda i: i[0] if isinstance(i[0], (int, float)) else 0)
        for position, item in enumerate(pending, start=1):
            if item[1] == prompt_id:
                return f"queued ({position} of {len(pending)})"
        return None

    async def _find(self, server: ComfyServer, prompt_id: str) -> str | None:
        """Where the server has the prompt: "history", its place in the queue, or None."""
        if await self._history(server, prompt_id) is not None:
            return "history"
        place = await self._queue_place(server, prompt_id)
        if place is None and await self._history(server, prompt_id) is not None:
            return "history"  # it finished between the two reads
        return place

    async def poll(self, gen: GenerationContext) -> RunUpdate:
        server = self.server_for(gen.tool)
        prompt_id = gen.platform_run_id or gen.generation_id
        if await self._history(server, prompt_id) is not None:
            return await self._from_history(gen, server)
        place = await self._queue_place(server, prompt_id)
        if place is not None:
            # Prompts of an earlier process of ours went out under another client_id: their
            # websocket events go nowhere now, so polling carries them to the end.
            return self._processing(prompt_id, place)
        # It may have finished between the two reads.
        if await self._history(server, prompt_id) is not None:
            return await self._from_history(gen, server)
        raise ServiceError(
            f"prompt {prompt_id} is neither queued nor in the history of ComfyUI server {server.name}: "
            "lost after a server restart (history lives in the server's memory)",
            retryable=True,
            code="lost",
        )

    async def _from_history(self, gen: GenerationContext, server: ComfyServer) -> RunUpdate:
        prompt_id = gen.platform_run_id or gen.generation_id
        entry = await self._history(server, prompt_id)
        if entry is None:
            raise ServiceError(f"prompt {prompt_id} has no history yet", retryable=True, code="not_ready")
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        assert isinstance(status, dict)
        listed = status.get("messages")
        messages = [m for m in listed if isinstance(m, list) and len(m) == 2] if isinstance(listed, list) else []
        raw: dict[str, Any] = {"server": server.name, "statusStr": status.get("status_str")}
        stamps: list[float] = [
            m[1]["timestamp"]
            for m in messages
            if isinstance(m[1], dict) and isinstance(m[1].get("timestamp"), (int, float))
        ]
        if len(stamps) >= 2:
            raw["durationSeconds"] = (max(stamps) - min(stamps)) / 1000.0
        last_type, last_data = (messages[-1][0], messages[-1][1]) if messages else (None, {})
        if not isinstance(last_data, dict):
            last_data = {}
        if last_type == "execution_interrupted":
            node = last_data.get("node_id")
            return RunUpdate(
                status=GenerationStatus.CANCELLED,
                platform_run_id=prompt_id,
                live_status=f"interrupted at node {node} ({last_data.get('node_type')})"
                if node
                else "interrupted",
                raw=raw,
            )
        if last_type == "execution_error" or status.get("status_str") == "error":
            node = last_data.get("node_id")
            message = str(last_data.get("exception_message") or "the workflow failed").strip()
            where = f"node {node} ({last_data.get('node_type')})" if node else "the workflow"
            return RunUpdate(
                status=GenerationStatus.FAILED,
                platform_run_id=prompt_id,
                error=ServiceError(
                    f"{where} failed: {message}",
                    code=str(last_data.get("exception_type") or "execution_error"),
                    node=str(node) if node else None,
                    details={"node_type": last_data.get("node_type"), "executed": last_data.get("executed")},
                ).info(),
                raw=raw,
            )
        outputs = entry.get("outputs") if isinstance(entry.get("outputs"), dict) else {}
        assert isinstance(outputs, dict)
        items = items_from_history(outputs)
        try:
            chosen = select_outputs(items, gen.tool)
        except ServiceError as exc:
            return RunUpdate(
                status=GenerationStatus.FAILED, platform_run_id=prompt_id, error=exc.info(), raw=raw
            )
        values: dict[str, Any] = {}
        fetched: dict[int, Any] = {}
        for name, pick in chosen.items():
            picks = pick if isinstance(pick, list) else [pick]
            got = []
            for item in picks:
                if id(item) not in fetched:
                    try:
                        fetched[id(item)] = await self._fetch(server, item, name, gen.tool)
                    except ServiceError as exc:
                        if exc.retryable:
                            raise
                        return RunUpdate(
                            status=GenerationStatus.FAILED,
                            platform_run_id=prompt_id,
                            error=exc.info(),
                            raw=raw,
                        )
                got.append(fetched[id(item)])
            values[name] = got if isinstance(pick, list) else got[0]
        raw["outputNodes"] = sorted(outputs)
        return RunUpdate(
            status=GenerationStatus.COMPLETED,
            progress=1.0,
            outputs=values,
            platform_run_id=prompt_id,
            raw=raw,
        )

    async def _fetch(self, server: ComfyServer, item: OutputItem, name: str, tool: ToolDefinition) -> Any:
        """An output file from ``/view``: read up to ``media_max_bytes`` (a larger one is not read
        to its end) and checked against the output's declared type (an error page answered with
        HTTP 200 is not stored as an image)."""
        import httpx

        if item.media == "text" or not isinstance(item.item, dict):
            return item.item
        params = {
            "filename": str(item.item.get("filename", "")),
            "subfolder": str(item.item.get("subfolder", "")),
            "type": str(item.item.get("type", "output")),
        }
        limit = self.settings.media_max_bytes
        url = server.base_url.rstrip("/") + "/view"
        what = f"ComfyUI server {server.name} ({shown_url(server.base_url)})"
        try:
            async with asyncio.timeout(self.timeout * WHOLE_ANSWER_TIMEOUTS), \
                    self.host.http.stream("GET", url, params=params, timeout=self.timeout) as response:
                if response.status_code >= 400:
                    raise ServiceError(
                        f"ComfyUI server {server.name} has no output file {params['filename']} "
                        f"(node {item.node}, HTTP {response.status_code})",
                        retryable=response.status_code >= 500,
                        code="server_error" if response.status_code >= 500 else "output_missing",
                        node=item.node,
                    )
                data = await read_at_most(response.aiter_bytes(), limit, lambda: ServiceError(
                    f"output {name!r} ({params['filename']}, node {item.node}) is larger than "
                    f"media_max_bytes ({limit} bytes); not downloaded",
                    code="too_large", node=item.node,
                ))
                mime = response.headers.get("content-type", "").split(";", 1)[0].strip() or None
        except TimeoutError:
            raise ServiceError(
                f"{what} did not finish sending output file {params['filename']} within "
                f"{self.timeout * WHOLE_ANSWER_TIMEOUTS:.0f} s", retryable=True, code="timeout", node=item.node,
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"{what} broke off output file {params['filename']}: {type(exc).__name__}",
                retryable=True, code="unreachable", node=item.node,
            ) from None
        param = tool.output(name)
        problem = media_problem(param.type.value, data) if param is not None else None
        if problem:
            raise ServiceError(
                f"output {name!r} ({params['filename']}, node {item.node}) {problem}; "
                f"{what} answered something else than the file",
                code="bad_output", node=item.node,
            )
        if mime in (None, "application/octet-stream"):
            mime = None
        ref = await asyncio.to_thread(self.host.artifacts.put_bytes, data, mime, params["filename"])
        return ref.as_value()

    # cancel ------------------------------------------------------------------------------------

    async def _cancel_prompt(self, server: ComfyServer, prompt_id: str) -> None:
        await self._request(server, "POST", "/queue", json={"delete": [prompt_id]})
        await self._request(server, "POST", "/interrupt", json={"prompt_id": prompt_id})

    async def cancel(self, gen: GenerationContext) -> None:
        """Remove the prompt from the queue, and interrupt it if it is running.

        Interruption is cooperative (it lands at the next node boundary); the websocket then
        reports the cancelled state. A prompt deleted while pending never reaches history.
        """
        server = self.server_for(gen.tool)
        await self._cancel_prompt(server, gen.platform_run_id or gen.generation_id)

    # webhooks ----------------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookUpdate:
        raise WebhookRejected("the comfyui service takes no webhooks; it listens on the server's websocket")

    async def finalize(self, gen: GenerationContext, update: RunUpdate) -> RunUpdate:
        return update

    async def close(self) -> None:
        self._closed = True
        listeners = list(self._listeners.values())
        self._listeners.clear()
        for listener in listeners:
            await listener.stop()
        for task in list(self._finishing):
            task.cancel()
        for task in list(self._finishing):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
