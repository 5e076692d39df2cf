"""A fake ComfyUI Deploy v2 API on loopback: queue, get and cancel runs; serve output files;
and send webhooks the way the backend does — or duplicated, out of order, late or forged.

Each queued run plays the next case of the script (``script(...)``; a success when empty). A
case is a list of states ``(status, progress, live_status)``; every ``GET /api/run/{id}`` moves
the run one state on (``advance`` does it by hand), so tests never depend on timing; ``play``
moves a run through its states and POSTs the backend's webhook of each to the URL the run was
queued with (``send=False`` loses them, as when webhooks never arrive). The last
state of a successful case carries the outputs: a ``ComfyDeployOutputImage`` row whose
``MediaItem.url`` points at this server's ``/files/...`` (as signed storage URLs do), and a text
row. Shapes follow the v2 backend's ``WorkflowRunModel`` and ``send_webhook`` (reference notes
4.3 and 4.4).
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.comfyui_server import SAMPLE_PNG
from tests.fakes.server import LoopbackServer

DEPLOY_TOOL = {  # a tool definition for deployment "d-1" of this fake: a prompt in, an image out
    "toolId": "cd-invert",
    "service": "comfydeploy",
    "inputSchema": {"prompt": {"type": "text", "default": "x"}},
    "outputSchema": {"image": {"type": "image"}},
    "metadata": {"deploymentId": "d-1"},
}
RUNNING = [
    ("not-started", 0.0, None),
    ("queued", 0.0, None),
    ("started", 0.0, None),
    ("running", 0.25, "Executing EmptyImage"),
    ("running", 0.75, "Executing KSampler"),
]


@dataclass
class DeployCase:
    states: list[tuple[str, float, str | None]]
    outputs: bool = True
    gpu: str = "A10G"
    run_duration: float = 12.5

    @classmethod
    def success(cls, **kw: Any) -> DeployCase:
        return cls([*RUNNING, ("success", 1.0, None)], **kw)

    @classmethod
    def failed(cls) -> DeployCase:
        return cls([*RUNNING[:4], ("failed", 0.25, "Error in KSampler")], outputs=False)

    @classmethod
    def timeout(cls) -> DeployCase:
        return cls([("not-started", 0.0, None), ("timeout", 0.0, None)], outputs=False)

    @classmethod
    def endless(cls) -> DeployCase:
        return cls([*RUNNING, ("running", 0.9, "Executing VAEDecode")], outputs=False)


@dataclass
class FakeRun:
    id: str
    deployment_id: str
    inputs: dict[str, Any]
    webhook: str | None
    intermediate: bool
    case: DeployCase
    step: int = 0
    cancelled: bool = False
    played: int = -1
    """The last state ``play`` moved the run to (and sent the webhook of)."""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def state(self) -> tuple[str, float, str | None]:
        if self.cancelled:
            _, progress, _ = self.case.states[self.step]
            return "cancelled", progress, None
        return self.case.states[self.step]


class FakeComfyDeploy:
    def __init__(self, api_key: str = "cd-test-key") -> None:
        self.api_key = api_key
        self._script: list[DeployCase] = []
        self.runs: dict[str, FakeRun] = {}
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.file_requests: list[dict[str, str]] = []
        self.deployments: dict[str, dict[str, Any]] = {}
        self.webhooks_sent: list[tuple[str, dict[str, Any], int | None]] = []
        """``(url, body, final HTTP status or None when unreachable)`` of every webhook ``play`` sent."""
        self.server = LoopbackServer(self._app())

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def api_url(self) -> str:
        return self.server.base_url + "/api"

    async def start(self) -> FakeComfyDeploy:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    def script(self, *cases: DeployCase) -> None:
        self._script.extend(cases)

    def advance(self, run_id: str, steps: int = 1) -> None:
        run = self.runs[run_id]
        run.step = min(run.step + steps, len(run.case.states) - 1)

    def finish(self, run_id: str) -> None:
        run = self.runs[run_id]
        run.step = len(run.case.states) - 1

    # the run as the API shows it ------------------------------------------------------------

    def _outputs(self, run: FakeRun, upto_terminal: bool) -> list[dict[str, Any]]:
        if not run.case.outputs or not upto_terminal:
            return []
        name = f"{run.id[:8]}_00001_.png"
        self.files[f"{run.id}/{name}"] = SAMPLE_PNG
        now = datetime.now(UTC).isoformat()
        return [
            {
                "id": str(uuid.uuid4()),
                "run_id": run.id,
                "output_id": "output_images",
                "data": {
                    "images": [
                        {
                            "url": f"{self.base_url}/files/{run.id}/{name}?X-Amz-Signature=abc",
                            "type": "output",
                            "filename": name,
                            "is_public": False,
                            "subfolder": "",
                            "upload_duration": 0.2,
                        }
                    ]
                },
                "node_meta": {"node_id": "9", "node_class": "ComfyDeployOutputImage"},
                "created_at": now,
                "updated_at": now,
            },
            {
                "id": str(uuid.uuid4()),
                "run_id": run.id,
                "data": {"text": [f"seen: {run.inputs.get('prompt', '')}"]},
                "node_meta": {"node_id": "12", "node_class": "PreviewAny"},
                "created_at": now,
                "updated_at": now,
            },
        ]

    def run_body(self, run: FakeRun) -> dict[str, Any]:
        status, progress, live = run.state
        done = status in ("success", "failed", "timeout", "cancelled")
        return {
            "id": run.id,
            "workflow_version_id": "wv-1",
            "workflow_inputs": run.inputs,
            "workflow_id": "wf-1",
            "workflow_api": {},
            "machine_id": "m-1",
            "origin": "api",
            "status": status,
            "ended_at": datetime.now(UTC).isoformat() if done else None,
            "created_at": run.created_at,
            "updated_at": datetime.now(UTC).isoformat(),
            "queued_at": run.created_at,
            "started_at": run.created_at if status not in ("not-started", "queued") else None,
            "gpu_event_id": "ge-1",
            "gpu": run.case.gpu,
            "machine_version": "v1",
            "machine_type": "comfy-deploy-serverless",
            "modal_function_call_id": "fc-1",
            "user_id": "user_1",
            "org_id": None,
            "live_status": live,
            "progress": progress,
            "is_realtime": False,
            "webhook": run.webhook,
            "webhook_status": None,
            "webhook_intermediate_status": run.intermediate,
            "outputs": self._outputs(run, status == "success"),
            "number": 1,
            "duration": run.case.run_duration + 3.0 if done else None,
            "cold_start_duration": 3.0,
            "cold_start_duration_total": 3.0,
            "run_duration": run.case.run_duration if done else None,
            "queue_position": None,
        }

    def webhook_body(self, run_id: str, step: int | None = None) -> dict[str, Any]:
        """What ``send_webhook`` posts for a run at a state (default: the current one)."""
        run = self.runs[run_id]
        if step is not None:
            run = copy.copy(run)
            run.step = step
        status, progress, live = run.state
        return {
            "event_type": "run.updated",
            "status": status,
            "live_status": live,
            "progress": progress,
            "run_id": run.id,
            "outputs": self._outputs(run, status == "success"),
        }

    def webhook_bodies(self, run_id: str) -> list[dict[str, Any]]:
        """Every webhook of a run in order: one per state of its case."""
        return [self.webhook_body(run_id, i) for i in range(len(self.runs[run_id].case.states))]

    async def play(self, run_id: str, until: int | None = None, *, send: bool = True) -> list[int | None]:
        """Move a run through its next states (up to index ``until``, default the last) the way
        the backend reports them: for each state the run's ``send_webhook`` body is POSTed to the
        webhook URL given at queue time — every state with ``webhook_intermediate_status``, else
        only status changes — with the backend's retries (3 tries, 0.5 s then 1 s apart, on
        non-2xx or errors). ``send=False`` moves the run on and loses the webhooks. Returns the
        final status code of each webhook sent (None: unreachable)."""
        run = self.runs[run_id]
        last = len(run.case.states) - 1 if until is None else min(until, len(run.case.states) - 1)
        codes: list[int | None] = []
        async with httpx.AsyncClient(timeout=20) as client:
            for index in range(run.played + 1, last + 1):
                previous = run.case.states[run.played][0] if run.played >= 0 else None
                run.step = run.played = index
                if not (send and run.webhook):
                    continue
                if not run.intermediate and run.state[0] == previous:
                    continue
                body = self.webhook_body(run_id)
                code = await self._send_webhook(client, run.webhook, body)
                self.webhooks_sent.append((run.webhook, body, code))
                codes.append(code)
        return codes

    @staticmethod
    async def _send_webhook(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> int | None:
        code: int | None = None
        for attempt, pause in enumerate((0.5, 1.0, None)):
            try:
                response = await client.post(url, json=body)
                code = response.status_code
                if 200 <= code < 300:
                    return code
            except httpx.HTTPError:
                code = None
            if pause is not None and attempt < 2:
                await asyncio.sleep(pause)
        return code

    # HTTP -----------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/run/deployment/queue", self.queue, methods=["POST"]),
                Route("/api/run/{run_id}", self.get_run, methods=["GET"]),
                Route("/api/run/{run_id}/cancel", self.cancel, methods=["POST"]),
                Route("/api/deployments", self.list_deployments, methods=["GET"]),
                Route("/files/{run_id}/{name}", self.file, methods=["GET"]),
            ]
        )

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _unauthorised(self) -> Response:
        return JSONResponse({"detail": "Invalid or expired token"}, status_code=401)

    async def queue(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        body = json.loads(await request.body())
        self.calls.append(("POST", "/run/deployment/queue", body))
        if not body.get("deployment_id"):
            return JSONResponse(
                {"detail": [{"loc": ["body", "deployment_id"], "msg": "Field required", "type": "missing"}]},
                status_code=422,
            )
        if self.deployments and body["deployment_id"] not in self.deployments:
            return JSONResponse({"detail": "Deployment not found"}, status_code=404)
        case = self._script.pop(0) if self._script else DeployCase.success()
        run = FakeRun(
            id=str(uuid.uuid4()),
            deployment_id=body["deployment_id"],
            inputs=body.get("inputs") or {},
            webhook=body.get("webhook"),
            intermediate=bool(body.get("webhook_intermediate_status")),
            case=case,
        )
        self.runs[run.id] = run
        return JSONResponse({"run_id": run.id})

    async def get_run(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        run_id = request.path_params["run_id"]
        self.calls.append(("GET", f"/run/{run_id}", None))
        run = self.runs.get(run_id)
        if run is None:
            return JSONResponse({"detail": "Run not found"}, status_code=404)
        body = self.run_body(run)
        if not run.cancelled:
            self.advance(run_id)
        return JSONResponse(body)

    async def cancel(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        run_id = request.path_params["run_id"]
        self.calls.append(("POST", f"/run/{run_id}/cancel", None))
        run = self.runs.get(run_id)
        if run is None:
            return JSONResponse({"detail": f"Error cancel function {run_id}"}, status_code=500)
        run.cancelled = True
        return JSONResponse({"status": "success", "message": "Function cancelled"})

    async def list_deployments(self, request: Request) -> Response:
        if not self._authorised(request):
            return self._unauthorised()
        return JSONResponse(list(self.deployments.values()))

    async def file(self, request: Request) -> Response:
        self.file_requests.append(dict(request.headers))
        data = self.files.get(f"{request.path_params['run_id']}/{request.path_params['name']}")
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")


async def post_webhooks(url: str, bodies: list[Any]) -> list[int]:
    """POST bodies (dicts as JSON, bytes as they are) to a webhook URL; the status codes."""
    codes = []
    async with httpx.AsyncClient(timeout=10) as client:
        for body in bodies:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            response = await client.post(url, content=content, headers={"Content-Type": "application/json"})
            codes.append(response.status_code)
    return codes
