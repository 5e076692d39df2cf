"""A fake ComfyUI server: real HTTP and websocket on loopback, replaying the captured samples.

It runs one prompt at a time, like the real server, and plays each submitted prompt through the
next case of its script (``script(...)``; a success when the script is empty):

- ``Case.success()`` — execution_start, execution_cached, per node progress_state/executing (a
  ``progress`` run and a binary preview frame on the first node), ``executed`` for output nodes,
  execution_success, history written, then ``executing`` with ``node: null``;
- ``Case.node_errors(200)`` / ``Case.node_errors(400)`` — the captured validation answer;
- ``Case.runtime_error()`` — the captured ``execution_error`` at the last output node;
- ``hold=True`` on any case — stop on the first node until ``release()`` or an interrupt: history
  is ``{}`` meanwhile and later prompts wait in ``queue_pending``.

``restart()`` stops the server and starts it again on the same port with empty history and queue
(uploaded and output files stay on "disk"). Outputs are computed from the workflow: saved images
carry the bytes of the uploaded image their chain loads (else the sample PNG), ``PreviewAny``
shows the string its input evaluates to. Message shapes follow ``samples/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.fakes.server import LoopbackServer

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


SAMPLE_PNG = (SAMPLES / "run1_output.png").read_bytes()
FAKE_MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 32
FAKE_WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8L" + b"\x00" * 28
FAKE_FLAC = b"fLaC" + b"\x00" * 34

OUTPUT_NODES = {
    "SaveImage",
    "PreviewImage",
    "SaveAnimatedWEBP",
    "SaveAnimatedPNG",
    "SaveVideo",
    "PreviewAny",
    "VHS_VideoCombine",
    "SaveAudio",
    "ComfyDeployOutputImage",
}
KNOWN_NODES = OUTPUT_NODES | {
    "EmptyImage",
    "ImageInvert",
    "ImageScaleBy",
    "ImageBlur",
    "LoadImage",
    "LoadAudio",
    "PrimitiveString",
    "PrimitiveInt",
    "StringConcatenate",
    "CreateVideo",
    "KSampler",
}


@dataclass
class Case:
    kind: str = "success"
    hold: bool = False
    status: int = 200
    sample_case: str = "value_out_of_range"

    @classmethod
    def success(cls, *, hold: bool = False) -> Case:
        return cls("success", hold=hold)

    @classmethod
    def node_errors(cls, status: int = 400, sample_case: str = "value_out_of_range") -> Case:
        return cls("node_errors", status=status, sample_case=sample_case)

    @classmethod
    def runtime_error(cls, *, hold: bool = False) -> Case:
        return cls("runtime_error", hold=hold)


@dataclass
class Prompt:
    prompt_id: str
    number: float
    workflow: dict[str, Any]
    client_id: str | None
    case: Case
    outputs_to_execute: list[str]
    released: asyncio.Event = field(default_factory=asyncio.Event)
    interrupted: bool = False

    def queue_item(self) -> list[Any]:
        extra = {"client_id": self.client_id} if self.client_id else {}
        return [self.number, self.prompt_id, self.workflow, extra, self.outputs_to_execute]


@dataclass
class Recorded:
    method: str
    path: str
    body: Any


class FakeComfyUI:
    def __init__(self) -> None:
        self._script: deque[Case] = deque()
        self.requests: list[Recorded] = []
        self.history: dict[str, dict[str, Any]] = {}
        self.pending: list[Prompt] = []
        self.running: Prompt | None = None
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.sockets: dict[str, WebSocket] = {}
        self.ws_connects = 0
        self.counter = 0
        self.restarts = 0
        self._wake = asyncio.Event()
        self._executor: asyncio.Task[None] | None = None
        self._current_node: str | None = None
        self.missing_classes: set[str] = set()
        """Node classes this server's ``/object_info`` leaves out (a server without some nodes)."""
        self.server = LoopbackServer(self._app())

    # lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.server.base_url

    async def start(self) -> FakeComfyUI:
        await self.server.start()
        self._executor = asyncio.get_running_loop().create_task(self._execute_forever())
        return self

    async def stop(self) -> None:
        if self._executor is not None:
            self._executor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._executor
            self._executor = None
        for ws in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=1012)
        self.sockets.clear()
        await self.server.stop()

    async def restart(self) -> None:
        """Stop and start again on the same port: history, queue and counter are lost."""
        await self.stop()
        self.history.clear()
        self.pending.clear()
        self.running = None
        self.counter = 0
        self.restarts += 1
        await self.start()

    def script(self, *cases: Case) -> None:
        self._script.extend(cases)

    def release(self, prompt_id: str | None = None) -> None:
        """Let a held prompt (the running one by default) go on."""
        for prompt in [self.running, *self.pending]:
            if prompt is not None and (prompt_id is None or prompt.prompt_id == prompt_id):
                prompt.released.set()
                if prompt_id is None:
                    return

    def posted_prompts(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST" and r.path == "/prompt"]

    async def wait_running(self, prompt_id: str) -> None:
        for _ in range(1000):
            if self.running is not None and self.running.prompt_id == prompt_id and self._current_node:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"prompt {prompt_id} never started")

    # HTTP -----------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        routes: list[Any] = []
        for prefix in ("", "/api"):
            routes += [
                Route(prefix + "/prompt", self.post_prompt, methods=["POST"]),
                Route(prefix + "/prompt", self.get_prompt, methods=["GET"]),
                Route(prefix + "/history/{prompt_id}", self.get_history_one, methods=["GET"]),
                Route(prefix + "/history", self.get_history, methods=["GET"]),
                Route(prefix + "/history", self.post_history, methods=["POST"]),
                Route(prefix + "/queue", self.get_queue, methods=["GET"]),
                Route(prefix + "/queue", self.post_queue, methods=["POST"]),
                Route(prefix + "/interrupt", self.post_interrupt, methods=["POST"]),
                Route(prefix + "/upload/image", self.upload_image, methods=["POST"]),
                Route(prefix + "/view", self.view, methods=["GET"]),
                Route(prefix + "/object_info", self.object_info, methods=["GET"]),
                WebSocketRoute(prefix + "/ws", self.websocket),
            ]
        return Starlette(routes=routes)

    async def object_info(self, request: Request) -> Response:
        """The captured 0.3.64 ``/object_info`` (the bundled copy), less ``missing_classes``."""
        from toolweave.comfy import ObjectInfo

        self.requests.append(Recorded("GET", "/object_info", None))
        info = {k: v for k, v in ObjectInfo.default().raw().items() if k not in self.missing_classes}
        return JSONResponse(info)

    async def _json_body(self, request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return None
        return json.loads(raw)

    async def post_prompt(self, request: Request) -> Response:
        try:
            body = await self._json_body(request)
        except ValueError:
            return PlainTextResponse("500 Internal Server Error", status_code=500)
        self.requests.append(Recorded("POST", "/prompt", body))
        if not isinstance(body, dict) or "prompt" not in body:
            return self._error(400, "no_prompt", "No prompt provided", "")
        workflow = body["prompt"]
        case = self._script.popleft() if self._script else Case.success()
        invalid = self._validate(workflow)
        if invalid is not None:
            return invalid
        outputs = [nid for nid, n in workflow.items() if n["class_type"] in OUTPUT_NODES]
        if case.kind == "node_errors":
            captured = copy.deepcopy(sample("prompt_validation_errors.json")[case.sample_case]["response"])
            if case.status >= 400:
                return JSONResponse(captured, status_code=case.status)
            # Partial acceptance: HTTP 200, node_errors set, the valid outputs queued.
            prompt_id = str(body.get("prompt_id") or uuid.uuid4())
            number = self.counter
            self.counter += 1
            return JSONResponse(
                {"prompt_id": prompt_id, "number": number, "node_errors": captured["node_errors"]}
            )
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        number: float = self.counter
        self.counter += 1
        if body.get("front"):
            number = -number
        prompt = Prompt(prompt_id, number, workflow, body.get("client_id"), case, outputs)
        self.pending.append(prompt)
        self._wake.set()
        await self._broadcast_status()
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    def _error(self, status: int, type_: str, message: str, details: str) -> JSONResponse:
        return JSONResponse(
            {
                "error": {"type": type_, "message": message, "details": details, "extra_info": {}},
                "node_errors": {},
            },
            status_code=status,
        )

    def _validate(self, workflow: Any) -> Response | None:
        if not isinstance(workflow, dict):
            return self._error(400, "invalid_prompt", "Prompt is not a dict", "")
        for node_id, node in workflow.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return self._error(
                    400,
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            class_type = node["class_type"]
            if class_type not in KNOWN_NODES and not class_type.startswith("ComfyUIDeployExternal"):
                return self._error(
                    400,
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                )
        if not any(n["class_type"] in OUTPUT_NODES for n in workflow.values()):
            return self._error(400, "prompt_no_outputs", "Prompt has no outputs", "")
        node_errors: dict[str, Any] = {}
        for node_id, node in workflow.items():
            for name, value in (node.get("inputs") or {}).items():
                if isinstance(value, list) and (len(value) != 2 or str(value[0]) not in workflow):
                    node_errors[node_id] = {
                        "errors": [
                            {
                                "type": "exception_during_validation",
                                "message": "Exception when validating node",
                                "details": repr(str(value[0]) if value else name),
                                "extra_info": {},
                            }
                        ],
                        "dependent_outputs": [],
                        "class_type": node["class_type"],
                    }
            if node["class_type"] == "LoadImage":
                image = str((node.get("inputs") or {}).get("image", ""))
                sub, _, fname = image.rpartition("/")
                if ("input", sub, fname) not in self.files:
                    node_errors[node_id] = {
                        "errors": [
                            {
                                "type": "custom_validation_failed",
                                "message": "Custom validation failed for node",
                                "details": f"image - Invalid image file: {image}",
                                "extra_info": {"input_name": "image"},
                            }
                        ],
                        "dependent_outputs": [],
                        "class_type": "LoadImage",
                    }
        if node_errors:
            return JSONResponse(
                {
                    "error": {
                        "type": "prompt_outputs_failed_validation",
                        "message": "Prompt outputs failed validation",
                        "details": "",
                        "extra_info": {},
                    },
                    "node_errors": node_errors,
                },
                status_code=400,
            )
        return None

    async def get_prompt(self, request: Request) -> Response:
        remaining = len(self.pending) + (1 if self.running else 0)
        return JSONResponse({"exec_info": {"queue_remaining": remaining}})

    async def get_history_one(self, request: Request) -> Response:
        prompt_id = request.path_params["prompt_id"]
        self.requests.append(Recorded("GET", "/history", prompt_id))
        entry = self.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry else {})

    async def get_history(self, request: Request) -> Response:
        max_items = int(request.query_params.get("max_items", "10000"))
        items = list(self.history.items())[-max_items:]
        return JSONResponse(dict(items))

    async def post_history(self, request: Request) -> Response:
        body = await self._json_body(request) or {}
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete", []):
            self.history.pop(prompt_id, None)
        return Response(status_code=200)

    async def get_queue(self, request: Request) -> Response:
        self.requests.append(Recorded("GET", "/queue", None))
        running = [self.running.queue_item()] if self.running else []
        return JSONResponse(
            {"queue_running": running, "queue_pending": [p.queue_item() for p in self.pending]}
        )

    async def post_queue(self, request: Request) -> Response:
        body = await self._json_body(request) or {}
        self.requests.append(Recorded("POST", "/queue", body))
        if body.get("clear"):
            self.pending.clear()
        delete = set(body.get("delete", []))
        self.pending = [p for p in self.pending if p.prompt_id not in delete]
        await self._broadcast_status()
        return Response(status_code=200)

    async def post_interrupt(self, request: Request) -> Response:
        body = await self._json_body(request) or {}
        self.requests.append(Recorded("POST", "/interrupt", body))
        running = self.running
        if running is not None and (not body.get("prompt_id") or body["prompt_id"] == running.prompt_id):
            running.interrupted = True
            running.released.set()
        return Response(status_code=200)

    async def upload_image(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("image")
        self.requests.append(
            Recorded("POST", "/upload/image", {k: str(v) for k, v in form.items() if k != "image"})
        )
        if upload is None or isinstance(upload, str):
            return Response(status_code=400)
        data = await upload.read()
        folder = str(form.get("type") or "input")
        sub = str(form.get("subfolder") or "")
        name = upload.filename or "upload.png"
        overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
        key = (folder, sub, name)
        if key in self.files and self.files[key] != data and not overwrite:
            stem, dot, ext = name.rpartition(".")
            n = 1
            while (folder, sub, f"{stem} ({n}){dot}{ext}") in self.files:
                n += 1
            name = f"{stem} ({n}){dot}{ext}"
            key = (folder, sub, name)
        self.files[key] = data
        return JSONResponse({"name": name, "subfolder": sub, "type": folder})

    async def view(self, request: Request) -> Response:
        q = request.query_params
        filename = q.get("filename", "")
        if filename.endswith("]") and " [" in filename:
            filename, _, kind = filename[:-1].rpartition(" [")
        else:
            kind = q.get("type", "output")
        if kind not in ("output", "input", "temp") or ".." in filename or filename.startswith("/"):
            return Response(status_code=400)
        if ".." in q.get("subfolder", ""):
            return Response(status_code=403)
        data = self.files.get((kind, q.get("subfolder", ""), filename))
        if data is None:
            return Response(status_code=404)
        media = {"png": "image/png", "webp": "image/webp", "mp4": "video/mp4", "flac": "audio/flac"}
        mime = media.get(filename.rsplit(".", 1)[-1], "application/octet-stream")
        return Response(data, media_type=mime, headers={"Content-Disposition": f'filename="{filename}"'})

    # websocket ------------------------------------------------------------------------------

    async def websocket(self, ws: WebSocket) -> None:
        client_id = ws.query_params.get("clientId") or uuid.uuid4().hex
        await ws.accept()
        self.ws_connects += 1
        old = self.sockets.get(client_id)
        self.sockets[client_id] = ws
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        try:
            remaining = len(self.pending) + (1 if self.running else 0)
            await ws.send_json(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": client_id},
                }
            )
            if self.running is not None and self.running.client_id == client_id and self._current_node:
                await ws.send_json(
                    {
                        "type": "executing",
                        "data": {
                            "node": self._current_node,
                            "display_node": self._current_node,
                            "prompt_id": self.running.prompt_id,
                        },
                    }
                )
            while True:
                message = await ws.receive_text()
                with contextlib.suppress(ValueError):
                    if json.loads(message).get("type") == "feature_flags":
                        await ws.send_json(
                            {
                                "type": "feature_flags",
                                "data": {"supports_preview_metadata": True, "max_upload_size": 104857600},
                            }
                        )
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if self.sockets.get(client_id) is ws:
                del self.sockets[client_id]

    async def _send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        ws = self.sockets.get(client_id) if client_id else None
        if ws is None:
            return
        with contextlib.suppress(Exception):
            await ws.send_json({"type": kind, "data": data})

    async def _send_binary(self, client_id: str | None, payload: bytes) -> None:
        ws = self.sockets.get(client_id) if client_id else None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send_bytes(payload)

    async def _broadcast(self, kind: str, data: dict[str, Any]) -> None:
        for client_id in list(self.sockets):
            await self._send(client_id, kind, data)

    async def _broadcast_status(self) -> None:
        remaining = len(self.pending) + (1 if self.running else 0)
        await self._broadcast("status", {"status": {"exec_info": {"queue_remaining": remaining}}})

    # execution ------------------------------------------------------------------------------

    async def _execute_forever(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.pending.sort(key=lambda p: p.number)
            prompt = self.pending.pop(0)
            self.running = prompt
            try:
                await self._execute(prompt)
            finally:
                self.running = None
                self._current_node = None
            await self._broadcast_status()
            await self._send(prompt.client_id, "executing", {"node": None, "prompt_id": prompt.prompt_id})

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def _execute(self, prompt: Prompt) -> None:
        pid, cid = prompt.prompt_id, prompt.client_id
        messages: list[list[Any]] = []

        async def event(
            kind: str, data: dict[str, Any], *, keep: bool = False, broadcast: bool = False
        ) -> None:
            data = {**data, "prompt_id": pid}
            if keep:
                data["timestamp"] = self._now_ms()
                messages.append([kind, data])
            if broadcast:
                await self._broadcast(kind, data)
            else:
                await self._send(cid, kind, data)
            await asyncio.sleep(0)

        await event("execution_start", {}, keep=True)
        await event("execution_cached", {"nodes": []}, keep=True)
        order = list(prompt.workflow)
        error_node = prompt.outputs_to_execute[-1] if prompt.case.kind == "runtime_error" else None
        states: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        executed: list[str] = []
        for index, node_id in enumerate(order):
            class_type = prompt.workflow[node_id]["class_type"]
            states[node_id] = {
                "value": 0.0,
                "max": 1.0,
                "state": "running",
                "node_id": node_id,
                "prompt_id": pid,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
            await event("progress_state", {"nodes": copy.deepcopy(states)})
            self._current_node = node_id
            await event("executing", {"node": node_id, "display_node": node_id})
            if index == 0:
                for step in (1, 2, 3):
                    await event("progress", {"value": step, "max": 3, "node": node_id})
                await self._send_binary(cid, struct.pack(">II", 1, 2) + SAMPLE_PNG)
                if prompt.case.hold:
                    await prompt.released.wait()
            if prompt.interrupted:
                await event(
                    "execution_interrupted",
                    {"node_id": node_id, "node_type": class_type, "executed": executed},
                    keep=True,
                    broadcast=True,
                )
                self._write_history(prompt, outputs, messages, "error")
                return
            if node_id == error_node:
                captured = sample("run5_runtime_error.json")["history"]
                err = next(iter(captured.values()))["status"]["messages"][-1][1]
                await event(
                    "execution_error",
                    {
                        "node_id": node_id,
                        "node_type": class_type,
                        "executed": executed,
                        "exception_message": err["exception_message"],
                        "exception_type": err["exception_type"],
                        "traceback": err["traceback"],
                        "current_inputs": {},
                        "current_outputs": [],
                    },
                    keep=True,
                )
                self._write_history(prompt, outputs, messages, "error")
                return
            if class_type in OUTPUT_NODES:
                out = self._produce(prompt, node_id)
                outputs[node_id] = out
                await event("executed", {"node": node_id, "display_node": node_id, "output": out})
            states[node_id] = {**states[node_id], "value": 1.0, "state": "finished"}
            executed.append(node_id)
        await event("progress_state", {"nodes": copy.deepcopy(states)})
        await event("execution_success", {}, keep=True)
        self._write_history(prompt, outputs, messages, "success")

    def _write_history(
        self, prompt: Prompt, outputs: dict[str, Any], messages: list[Any], status: str
    ) -> None:
        extra = {"client_id": prompt.client_id} if prompt.client_id else {}
        self.history[prompt.prompt_id] = {
            "prompt": [prompt.number, prompt.prompt_id, prompt.workflow, extra, prompt.outputs_to_execute],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {
                n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs
            },
        }

    # what nodes produce ---------------------------------------------------------------------

    def _value(self, workflow: dict[str, Any], value: Any, depth: int = 0) -> Any:
        """Evaluate a node input: literals as they are, links to string/int nodes followed."""
        if not (isinstance(value, list) and len(value) == 2) or depth > 50:
            return value.get("__value__") if isinstance(value, dict) and "__value__" in value else value
        node = workflow.get(str(value[0]), {})
        inputs = node.get("inputs", {})
        class_type = node.get("class_type", "")
        if class_type in ("PrimitiveString", "PrimitiveInt"):
            return self._value(workflow, inputs.get("value"), depth + 1)
        if class_type == "StringConcatenate":
            a = self._value(workflow, inputs.get("string_a", ""), depth + 1)
            b = self._value(workflow, inputs.get("string_b", ""), depth + 1)
            return f"{a}{inputs.get('delimiter', '')}{b}"
        if class_type.startswith("ComfyUIDeployExternal"):
            return self._value(workflow, inputs.get("default_value", inputs.get("input_id")), depth + 1)
        return None

    def _image_bytes(self, workflow: dict[str, Any], node_id: str, depth: int = 0) -> bytes:
        """The bytes of the uploaded image a chain starts from, else the sample PNG."""
        node = workflow.get(node_id, {})
        if node.get("class_type") == "LoadImage":
            sub, _, name = str(node["inputs"].get("image", "")).rpartition("/")
            return self.files.get(("input", sub, name), SAMPLE_PNG)
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and depth < 50:
                return self._image_bytes(workflow, str(value[0]), depth + 1)
        return SAMPLE_PNG

    def _save(self, kind: str, prefix: str, ext: str, data: bytes) -> dict[str, Any]:
        sub, _, base = prefix.rpartition("/")
        n = 1
        while (kind, sub, f"{base}_{n:05d}_.{ext}") in self.files:
            n += 1
        filename = f"{base}_{n:05d}_.{ext}"
        self.files[(kind, sub, filename)] = data
        return {"filename": filename, "subfolder": sub, "type": kind}

    def _produce(self, prompt: Prompt, node_id: str) -> dict[str, Any]:
        workflow = prompt.workflow
        node = workflow[node_id]
        class_type = node["class_type"]
        inputs = node.get("inputs") or {}
        prefix = str(inputs.get("filename_prefix", "ComfyUI"))
        if class_type == "PreviewAny":
            return {"text": [str(self._value(workflow, inputs.get("source")))]}
        if class_type in ("SaveImage", "ComfyDeployOutputImage"):
            item = self._save("output", prefix, "png", self._image_bytes(workflow, node_id))
            if "output_id" in inputs:
                item["output_id"] = inputs["output_id"]
            return {"images": [item]}
        if class_type == "PreviewImage":
            tag = hashlib.sha1(prompt.prompt_id.encode()).hexdigest()[:5]
            return {
                "images": [
                    self._save("temp", f"ComfyUI_temp_{tag}", "png", self._image_bytes(workflow, node_id))
                ]
            }
        if class_type == "SaveAnimatedWEBP":
            return {"images": [self._save("output", prefix, "webp", FAKE_WEBP)], "animated": [True]}
        if class_type == "SaveAnimatedPNG":
            return {"images": [self._save("output", prefix, "png", SAMPLE_PNG)], "animated": [True]}
        if class_type == "SaveVideo":
            return {"images": [self._save("output", prefix, "mp4", FAKE_MP4)], "animated": [True]}
        if class_type == "VHS_VideoCombine":
            item = self._save("output", prefix, "mp4", FAKE_MP4)
            return {"gifs": [{**item, "format": "video/h264-mp4", "frame_rate": 8.0}]}
        if class_type == "SaveAudio":
            return {"audio": [self._save("output", prefix, "flac", FAKE_FLAC)]}
        return {}
