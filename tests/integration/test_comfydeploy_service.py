"""The comfydeploy service against a fake ComfyUI Deploy v2 API and real webhook POSTs."""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.comfydeploy_server import DeployCase, FakeComfyDeploy, post_webhooks
from tests.fakes.comfyui_server import SAMPLE_PNG
from tests.fakes.host import FakeHost
from tests.fakes.webhooks import WebhookReceiver

from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import GenerationContext, Service, ServiceError, WebhookRejected
from toolweave.services.comfydeploy import ComfyDeployService
from toolweave.settings import Settings

API_KEY = "cd-secret-key-0123456789"


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyDeploy]:
    server = await FakeComfyDeploy(api_key=API_KEY).start()
    yield server
    await server.stop()


def make_service(
    host: FakeHost, fake: FakeComfyDeploy, tmp_path: Path, key: str = API_KEY
) -> ComfyDeployService:
    settings = Settings(
        home=tmp_path, comfydeploy_api_key=key, comfydeploy_base_url=fake.api_url, http_timeout_seconds=5.0,
        media_allow_private_urls=True,  # the fake's storage URLs are on loopback
    )
    return ComfyDeployService(host, settings)


@pytest.fixture
def service(host: FakeHost, fake: FakeComfyDeploy, tmp_path: Path) -> ComfyDeployService:
    return make_service(host, fake, tmp_path)


@pytest.fixture
async def receiver(service: ComfyDeployService) -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(service).start()
    yield r
    await r.stop()


def deploy_tool(**metadata: Any) -> ToolDefinition:
    return ToolDefinition.model_validate(
        {
            "toolId": "cd-flux",
            "service": "comfydeploy",
            "inputSchema": {"prompt": {"type": "string"}, "input_image": {"type": "image"}},
            "outputSchema": {"image": {"type": "image"}, "caption": {"type": "string"}},
            "costingModel": {"rateSource": "machine", "machineClass": "T4"},
            "metadata": {"deploymentId": "0b5a7c1e-0000-4000-8000-000000000001", **metadata},
        }
    )


def gen_for(tool: ToolDefinition, inputs: dict[str, Any] | None = None, **kw: Any) -> GenerationContext:
    return GenerationContext(
        generation_id=str(uuid.uuid4()),
        run_id="run-1",
        step_id="step-1",
        attempt=1,
        account_id="acct",
        tool=tool,
        inputs=inputs or {},
        **kw,
    )


async def submitted(service: ComfyDeployService, gen: GenerationContext) -> GenerationContext:
    submission = await service.submit(gen)
    assert submission.platform_run_id
    return dataclasses.replace(gen, platform_run_id=submission.platform_run_id)


async def poll_until_terminal(service: ComfyDeployService, gen: GenerationContext) -> list[RunUpdate]:
    updates = []
    for _ in range(20):
        update = await service.poll(gen)
        updates.append(update)
        if update.status.terminal:
            return updates
    raise AssertionError("never finished")


async def test_is_a_service(service: ComfyDeployService) -> None:
    assert isinstance(service, Service)
    assert service.name == "comfydeploy"


async def test_submit_queues_the_deployment(
    service: ComfyDeployService, fake: FakeComfyDeploy, host: FakeHost
) -> None:
    ref = host.artifacts.put_bytes(SAMPLE_PNG)
    gen = gen_for(
        deploy_tool(gpu="A10G"),
        {"prompt": "a red fox", "input_image": ref.as_value(), "unused": None},
        webhook_url="https://example.invalid/webhooks/comfydeploy/g1?token=t",
    )
    submission = await service.submit(gen)
    run_id = submission.platform_run_id
    assert run_id in fake.runs
    assert submission.update is not None and submission.update.status is GenerationStatus.PROCESSING
    method, path, body = fake.calls[0]
    assert (method, path) == ("POST", "/run/deployment/queue")
    assert body["deployment_id"] == "0b5a7c1e-0000-4000-8000-000000000001"
    assert body["inputs"]["prompt"] == "a red fox"
    assert body["inputs"]["input_image"].startswith("data:image/png;base64,")
    assert "unused" not in body["inputs"]
    assert body["webhook"] == gen.webhook_url and body["webhook_intermediate_status"] is True
    assert body["gpu"] == "A10G"


async def test_poll_follows_the_run_to_success(
    service: ComfyDeployService, fake: FakeComfyDeploy, host: FakeHost
) -> None:
    gen = await submitted(service, gen_for(deploy_tool(), {"prompt": "fox"}))
    updates = await poll_until_terminal(service, gen)
    running = [u for u in updates if u.status is GenerationStatus.PROCESSING]
    assert [u.raw["status"] for u in running] == ["not-started", "queued", "started", "running", "running"]  # type: ignore[index]
    assert [u.progress for u in running][-2:] == [0.25, 0.75]
    assert running[-1].live_status == "Executing KSampler"

    final = updates[-1]
    assert final.status is GenerationStatus.COMPLETED
    outputs = final.outputs or {}
    image = ArtifactRef.from_value(outputs["image"])
    assert image is not None and host.artifacts.read(image) == SAMPLE_PNG
    assert outputs["caption"] == "seen: fox"
    raw = final.raw or {}
    assert raw["gpu"] == "A10G" and raw["runDuration"] == 12.5
    # Per-second cost at the backend's machine class (A10G), for the measured run time.
    assert final.cost_usd == (Decimal("12.5") * Decimal("0.000337")).quantize(Decimal("0.000001"))
    assert all("authorization" not in {k.lower() for k in h} for h in fake.file_requests)


async def test_outputs_can_stay_urls(service: ComfyDeployService, fake: FakeComfyDeploy) -> None:
    gen = await submitted(service, gen_for(deploy_tool(keepOutputUrls=True)))
    final = (await poll_until_terminal(service, gen))[-1]
    assert final.outputs is not None
    assert final.outputs["image"].startswith(fake.base_url + "/files/")
    assert fake.file_requests == []


async def test_output_map_by_output_id(service: ComfyDeployService) -> None:
    gen = await submitted(
        service,
        gen_for(deploy_tool(outputMap={"image": {"outputId": "output_images"}, "caption": {"node": "12"}})),
    )
    final = (await poll_until_terminal(service, gen))[-1]
    assert final.outputs is not None and ArtifactRef.is_ref(final.outputs["image"])
    assert final.outputs["caption"].startswith("seen:")


@pytest.mark.parametrize(
    ("case", "status", "retryable"),
    [
        (DeployCase.failed(), GenerationStatus.FAILED, False),
        (DeployCase.timeout(), GenerationStatus.TIMEOUT, True),
    ],
)
async def test_failed_and_timed_out_runs(
    service: ComfyDeployService,
    fake: FakeComfyDeploy,
    case: DeployCase,
    status: GenerationStatus,
    retryable: bool,
) -> None:
    fake.script(case)
    gen = await submitted(service, gen_for(deploy_tool()))
    final = (await poll_until_terminal(service, gen))[-1]
    assert final.status is status and final.outputs is None
    assert final.error is not None and final.error.retryable is retryable
    assert gen.platform_run_id in final.error.message  # type: ignore[operator]


async def test_cancel(service: ComfyDeployService, fake: FakeComfyDeploy) -> None:
    fake.script(DeployCase.endless())
    gen = await submitted(service, gen_for(deploy_tool()))
    await service.poll(gen)
    await service.cancel(gen)
    assert fake.runs[gen.platform_run_id].cancelled  # type: ignore[index]
    assert (await service.poll(gen)).status is GenerationStatus.CANCELLED


async def test_unknown_run_is_lost_and_retryable(service: ComfyDeployService) -> None:
    gen = gen_for(deploy_tool(), platform_run_id=str(uuid.uuid4()))
    with pytest.raises(ServiceError) as err:
        await service.poll(gen)
    assert err.value.retryable and err.value.code == "lost"
    with pytest.raises(ServiceError) as cancel_err:
        await service.cancel(gen)
    assert cancel_err.value.retryable


async def test_webhooks_in_order_reach_a_stored_success(
    service: ComfyDeployService, fake: FakeComfyDeploy, receiver: WebhookReceiver, host: FakeHost
) -> None:
    gen = gen_for(deploy_tool(), {"prompt": "owl"})
    gen = dataclasses.replace(gen, webhook_url=receiver.url_for(gen.generation_id))
    gen = await submitted(service, gen)
    receiver.register(gen)
    run_id = gen.platform_run_id
    assert fake.runs[run_id].webhook == gen.webhook_url  # type: ignore[index]

    bodies = fake.webhook_bodies(run_id)  # type: ignore[arg-type]
    fake.finish(run_id)  # type: ignore[arg-type]  # the backend is done when it sends the last one
    codes = await post_webhooks(gen.webhook_url, bodies)  # type: ignore[arg-type]
    assert set(codes) == {200}
    stored = receiver.stored[gen.generation_id]
    assert [u.status for u in stored[:-1]] == [GenerationStatus.PROCESSING] * 5
    assert all(u.outputs is None for u in stored[:-1]), "intermediate updates carry progress only"
    final = stored[-1]
    assert final.status is GenerationStatus.COMPLETED
    image = ArtifactRef.from_value((final.outputs or {})["image"])
    assert image is not None and host.artifacts.read(image) == SAMPLE_PNG
    assert (final.outputs or {})["caption"] == "seen: owl"
    assert final.cost_usd is not None  # run_duration fetched by finalize


async def test_duplicated_out_of_order_late_and_forged_webhooks(
    service: ComfyDeployService, fake: FakeComfyDeploy, receiver: WebhookReceiver
) -> None:
    gen = gen_for(deploy_tool())
    gen = dataclasses.replace(gen, webhook_url=receiver.url_for(gen.generation_id))
    gen = await submitted(service, gen)
    receiver.register(gen)
    run_id = gen.platform_run_id
    assert run_id is not None and gen.webhook_url is not None
    bodies = fake.webhook_bodies(run_id)
    running, success = bodies[3], bodies[-1]
    fake.finish(run_id)

    # duplicated
    await post_webhooks(gen.webhook_url, [running, running])
    assert len(receiver.stored[gen.generation_id]) == 1 and receiver.ignored == 1
    # out of order: success first, then the earlier states arrive late
    await post_webhooks(gen.webhook_url, [success, bodies[4], bodies[1]])
    assert receiver.status(gen.generation_id).status is GenerationStatus.COMPLETED  # type: ignore[union-attr]
    # after the terminal state: a failure and a cancel are no-ops
    late_fail = {**running, "status": "failed"}
    late_cancel = {**running, "status": "cancelled"}
    await post_webhooks(gen.webhook_url, [late_fail, late_cancel, success])
    assert receiver.status(gen.generation_id).status is GenerationStatus.COMPLETED  # type: ignore[union-attr]
    assert sum(1 for u in receiver.stored[gen.generation_id] if u.status.terminal) == 1

    # forged: a wrong token, and bodies that are not updates
    forged_url = gen.webhook_url.split("?token=")[0] + "?token=guess"
    assert await post_webhooks(forged_url, [success]) == [403]
    garbage = [
        b"not json",
        b"[1, 2]",
        {"run_id": run_id, "status": "exploded"},
        {"status": "success"},
        {"run_id": run_id, "status": "running", "progress": "half"},
        {"run_id": run_id, "status": "running", "outputs": "nope"},
        {"run_id": run_id, "status": "running", "event_type": "run.deleted"},
    ]
    assert await post_webhooks(gen.webhook_url, garbage) == [400] * len(garbage)
    assert len(receiver.rejected) == 1 + len(garbage)


async def test_parse_webhook_is_pure_and_normalises(service: ComfyDeployService) -> None:
    body = {
        "event_type": "run.updated",
        "status": "running",
        "live_status": "Executing KSampler",
        "progress": 0.42,
        "run_id": "r1",
        "outputs": [],
    }
    parsed = service.parse_webhook({}, json.dumps(body).encode())
    assert parsed.platform_run_id == "r1"
    assert parsed.update.status is GenerationStatus.PROCESSING
    assert parsed.update.progress == 0.42 and parsed.update.live_status == "Executing KSampler"
    assert parsed.update.outputs is None
    again = service.parse_webhook({}, json.dumps(body, indent=2).encode())
    assert again.event_key == parsed.event_key
    later = service.parse_webhook({}, json.dumps({**body, "progress": 0.5}).encode())
    assert later.event_key != parsed.event_key
    # The docs' 0..100 progress is read as a percentage; the SDK body without event_type parses.
    assert service.parse_webhook({}, json.dumps({**body, "progress": 42}).encode()).update.progress == 0.42
    sdk = service.parse_webhook({}, b'{"run_id": "r1", "status": "cancelled"}')
    assert sdk.update.status is GenerationStatus.CANCELLED
    with pytest.raises(WebhookRejected, match="progress 400 is out of range"):
        service.parse_webhook({}, json.dumps({**body, "progress": 400}).encode())


async def test_success_webhook_without_outputs_fetches_the_run(
    service: ComfyDeployService, fake: FakeComfyDeploy
) -> None:
    gen = await submitted(service, gen_for(deploy_tool()))
    assert gen.platform_run_id is not None
    fake.finish(gen.platform_run_id)
    parsed = service.parse_webhook(
        {}, json.dumps({"run_id": gen.platform_run_id, "status": "success"}).encode()
    )
    final = await service.finalize(gen, parsed.update)
    assert final.status is GenerationStatus.COMPLETED
    assert final.outputs is not None and ArtifactRef.is_ref(final.outputs["image"])


async def test_the_api_key_never_leaks(
    host: FakeHost,
    fake: FakeComfyDeploy,
    tmp_path: Path,
    receiver: WebhookReceiver,
    service: ComfyDeployService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    gen = gen_for(deploy_tool(), {"prompt": "x"})
    gen = dataclasses.replace(gen, webhook_url=receiver.url_for(gen.generation_id))
    submission = await service.submit(gen)
    gen = dataclasses.replace(gen, platform_run_id=submission.platform_run_id)
    receiver.register(gen)
    seen.append(submission.update.model_dump_json())  # type: ignore[union-attr]
    for update in await poll_until_terminal(service, gen):
        seen.append(update.model_dump_json())
    await post_webhooks(gen.webhook_url, fake.webhook_bodies(gen.platform_run_id))  # type: ignore[arg-type]
    seen += [u.model_dump_json() for u in receiver.stored[gen.generation_id]]
    # Errors too: a rejected key, and a failed run.
    wrong = make_service(host, fake, tmp_path, key=API_KEY + "-wrong")
    with pytest.raises(ServiceError) as err:
        await wrong.submit(gen_for(deploy_tool()))
    assert err.value.code == "unauthorized" and not err.value.retryable
    seen.append(str(err.value.info().model_dump_json()))
    fake.script(DeployCase.failed())
    failed = await submitted(service, gen_for(deploy_tool()))
    seen += [u.model_dump_json() for u in await poll_until_terminal(service, failed)]

    seen += [r.getMessage() for r in caplog.records]
    seen += [json.dumps(body) for _, _, body in fake.calls]
    seen += [json.dumps(h) for h in fake.file_requests]
    assert seen and not [s for s in seen if API_KEY in s]


async def test_configuration_errors_are_clear(
    host: FakeHost, fake: FakeComfyDeploy, tmp_path: Path, service: ComfyDeployService
) -> None:
    with pytest.raises(ServiceError, match=r"metadata\.deploymentId is required"):
        await service.submit(gen_for(deploy_tool(deploymentId=None)))
    nokey = make_service(host, fake, tmp_path, key="")
    with pytest.raises(ServiceError, match="no ComfyUI Deploy API key is configured"):
        await nokey.submit(gen_for(deploy_tool()))
    with pytest.raises(ServiceError) as err:
        await service.submit(gen_for(deploy_tool(), recovering=True))
    assert err.value.code == "unknown_outcome"
    assert fake.calls == []


def _deployments() -> dict[str, dict[str, Any]]:
    graph = {
        "1": {
            "class_type": "ComfyUIDeployExternalText",
            "inputs": {"input_id": "prompt", "default_value": "a cat", "description": "What to draw"},
        },
        "2": {"class_type": "ComfyUIDeployExternalImage", "inputs": {"input_id": "input_image"}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "9": {
            "class_type": "ComfyDeployOutputImage",
            "inputs": {
                "images": ["3", 0],
                "output_id": "output_images",
                "filename_prefix": "x",
                "file_type": "png",
                "quality": 80,
            },
        },
    }
    return {
        "d-graph": {
            "id": "d-graph",
            "environment": "production",
            "workflow": {"id": "w1", "name": "Invert Photo"},
            "version": {"workflow_api": graph},
        },
        "d-types": {
            "id": "d-types",
            "environment": "production",
            "workflow": {"id": "w2", "name": "Flux Dev"},
            "description": "Text to image",
            "input_types": [
                {
                    "type": "string",
                    "class_type": "ComfyUIDeployExternalText",
                    "input_id": "prompt",
                    "default_value": "a fox",
                    "display_name": "Prompt",
                    "description": "",
                },
                {
                    "type": "number",
                    "class_type": "ComfyUIDeployExternalNumberSliderInt",
                    "input_id": "steps",
                    "default_value": 20,
                    "min_value": 1,
                    "max_value": 50,
                    "display_name": "",
                    "description": "",
                },
            ],
            "output_types": [{"class_type": "ComfyDeployOutputImage", "output_id": "output_images"}],
        },
        "d-empty": {
            "id": "d-empty",
            "environment": "production",
            "workflow": {"id": "w3", "name": "Nothing"},
        },
        "d-staging": {
            "id": "d-staging",
            "environment": "staging",
            "workflow": {"id": "w4", "name": "Draft"},
            "input_types": [],
        },
    }


async def test_sync_writes_refreshes_and_removes_tool_files(
    service: ComfyDeployService, fake: FakeComfyDeploy, tmp_path: Path
) -> None:
    import yaml

    from toolweave.services.comfydeploy_sync import sync_deployments

    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "mine.yaml").write_text("toolId: mine\nservice: builtin\n")
    fake.deployments = _deployments()

    report = await sync_deployments(service, folder)
    assert sorted(Path(p).name for p in report.written) == ["cd-flux-dev.yaml", "cd-invert-photo.yaml"]
    assert [s.split(":")[0] for s in report.skipped] == ["d-empty"]
    flux = ToolDefinition.model_validate(yaml.safe_load((folder / "cd-flux-dev.yaml").read_text()))
    assert flux.metadata["deploymentId"] == "d-types"
    assert [(p.name, p.type.value, p.default) for p in flux.input_schema] == [
        ("prompt", "text", "a fox"),
        ("steps", "integer", 20),
    ]
    invert = ToolDefinition.model_validate(yaml.safe_load((folder / "cd-invert-photo.yaml").read_text()))
    assert {p.name for p in invert.input_schema} == {"prompt", "input_image"}
    assert invert.metadata["deploymentId"] == "d-graph"
    # What sync writes validates (its ExternalImage input is an image, not an "acceptsUrl" string).
    from toolweave.registry.validate_tool import validate_tool

    assert validate_tool(invert) == [] and validate_tool(flux) == []
    assert not next(p for p in invert.input_schema if p.name == "input_image").accepts_url

    again = await sync_deployments(service, folder)
    assert again.written == [] and len(again.unchanged) == 2

    # A rename keeps the tool id (and file); a deleted deployment's file goes; mine stays.
    fake.deployments["d-types"]["workflow"]["name"] = "Flux Dev v2"
    del fake.deployments["d-graph"]
    third = await sync_deployments(service, folder)
    assert [Path(p).name for p in third.written] == ["cd-flux-dev.yaml"]
    assert [Path(p).name for p in third.removed] == ["cd-invert-photo.yaml"]
    assert sorted(p.name for p in folder.iterdir()) == ["cd-flux-dev.yaml", "mine.yaml"]
    renamed = yaml.safe_load((folder / "cd-flux-dev.yaml").read_text())
    assert renamed["toolId"] == "cd-flux-dev" and renamed["displayName"] == "Flux Dev v2"

    # A synced tool runs.
    gen = await submitted(service, gen_for(flux, {"prompt": "hello", "steps": 4}))
    final = (await poll_until_terminal(service, gen))[-1]
    assert final.status is GenerationStatus.COMPLETED
    assert ArtifactRef.is_ref((final.outputs or {})["output_images"])


async def test_sync_command_line(fake: FakeComfyDeploy, tmp_path: Path) -> None:
    import asyncio
    import os
    import sys

    fake.deployments = _deployments()
    folder = tmp_path / "tools"

    async def run(key: str) -> tuple[int, str]:
        env = {
            **os.environ,
            "TOOLWEAVE_HOME": str(tmp_path / "home"),
            "TOOLWEAVE_COMFYDEPLOY_BASE_URL": fake.api_url,
            "TOOLWEAVE_COMFYDEPLOY_API_KEY": key,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "toolweave.cli",
            "sync",
            "comfydeploy",
            str(folder),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    code, out = await run(API_KEY)
    assert code == 0, out
    assert "2 written, 0 unchanged, 0 removed, 1 skipped" in out
    assert (folder / "cd-flux-dev.yaml").exists()
    code, out = await run("wrong")
    assert code == 1 and "rejected the API key" in out and "Traceback" not in out
