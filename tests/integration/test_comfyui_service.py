"""The comfyui service against a fake ComfyUI server (real HTTP + websocket on loopback)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.comfyui_server import SAMPLE_PNG, Case, FakeComfyUI, sample
from tests.fakes.host import FakeHost

from toolweave.model.definitions import ToolDefinition
from toolweave.model.records import ArtifactRef, RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import GenerationContext, Service, ServiceError, WebhookRejected
from toolweave.services.comfyui import ComfyUIService
from toolweave.settings import ComfyServer, Settings


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    server = await FakeComfyUI().start()
    yield server
    await server.stop()


@pytest.fixture
async def service(fake: FakeComfyUI, host: FakeHost, tmp_path: Path) -> AsyncIterator[ComfyUIService]:
    settings = Settings(
        home=tmp_path,
        comfyui_servers=[ComfyServer("local", fake.base_url, 2)],
        http_timeout_seconds=5.0,
    )
    svc = ComfyUIService(host, settings)
    yield svc
    await svc.close()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "comfyui"


def invert_tool(**metadata: Any) -> ToolDefinition:
    return ToolDefinition.model_validate(
        {
            "toolId": "invert",
            "service": "comfyui",
            "inputSchema": {"color": {"type": "integer"}},
            "outputSchema": {"image": {"type": "image"}},
            "metadata": {
                "workflow": sample("run1_invert.json")["request"]["prompt"],
                "inputMap": {"color": {"node": "1", "input": "color"}},
                **metadata,
            },
        }
    )


def upload_tool() -> ToolDefinition:
    workflow = sample("run3_upload_scale.json")["request"]["prompt"]
    return ToolDefinition.model_validate(
        {
            "toolId": "scale",
            "service": "comfyui",
            "inputSchema": {"image": {"type": "image", "required": True}},
            "outputSchema": {"image": {"type": "image"}},
            "metadata": {"workflow": workflow, "inputMap": {"image": {"node": "10", "input": "image"}}},
        }
    )


def media_tool(**metadata: Any) -> ToolDefinition:
    return ToolDefinition.model_validate(
        {
            "toolId": "media",
            "service": "comfyui",
            "inputSchema": {"greeting": {"type": "string"}},
            "outputSchema": {
                "text": {"type": "string"},
                "animation": {"type": "image"},
                "video": {"type": "video"},
            },
            "metadata": {
                "workflow": sample("run4_text_anim_video.json")["request"]["prompt"],
                "inputMap": {"greeting": {"node": "20", "input": "value"}},
                **metadata,
            },
        }
    )


def gen_for(tool: ToolDefinition, inputs: dict[str, Any] | None = None, **kw: Any) -> GenerationContext:
    return GenerationContext(
        generation_id=kw.pop("generation_id", str(uuid.uuid4())),
        run_id="run-1",
        step_id="step-1",
        attempt=1,
        account_id="acct",
        tool=tool,
        inputs=inputs or {},
        **kw,
    )


def is_terminal(update: RunUpdate) -> bool:
    return update.status.terminal


async def test_is_a_service(service: ComfyUIService) -> None:
    assert isinstance(service, Service)
    assert service.name == "comfyui"
    assert service.capacity(invert_tool()) == ("comfyui:local", 2)


async def test_success_is_reported_through_the_websocket(
    service: ComfyUIService, fake: FakeComfyUI, host: FakeHost
) -> None:
    gen = gen_for(invert_tool(), {"color": 255})
    submission = await service.submit(gen)
    assert submission.platform_run_id == gen.generation_id
    assert submission.update is not None and submission.update.status is GenerationStatus.PROCESSING

    posted = fake.posted_prompts()[0]
    assert posted["prompt_id"] == gen.generation_id
    assert posted["client_id"] == service.client_id
    assert posted["prompt"]["1"]["inputs"]["color"] == 255

    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED, final.error
    ref = ArtifactRef.from_value(final.outputs["image"])  # type: ignore[index]
    assert ref is not None and ref.mime_type == "image/png" and (ref.width, ref.height) == (64, 48)
    assert host.artifacts.read(ref) == SAMPLE_PNG

    progress = [u for u in host.updates[gen.generation_id] if u.status is GenerationStatus.PROCESSING]
    assert progress, "websocket progress messages become run events"
    assert any(u.live_status and "ImageInvert" in u.live_status for u in progress)
    values = [u.progress for u in progress if u.progress is not None]
    assert values == sorted(values) and all(0 <= v < 1 for v in values)
    # Completion came from the websocket: history was read once (to fetch outputs), never polled first.
    assert [r for r in fake.requests if r.path == "/queue"] == []


async def test_node_errors_with_400_name_the_node(service: ComfyUIService, fake: FakeComfyUI) -> None:
    fake.script(Case.node_errors(400))
    with pytest.raises(ServiceError) as err:
        await service.submit(gen_for(invert_tool()))
    assert not err.value.retryable
    assert err.value.node == "1"
    assert err.value.code == "prompt_outputs_failed_validation"
    assert "Value 0 smaller than min of 1" in err.value.message
    assert "node 1 (EmptyImage)" in err.value.message


async def test_node_errors_with_200_are_a_failure_and_are_taken_back(
    service: ComfyUIService, fake: FakeComfyUI
) -> None:
    fake.script(Case.node_errors(200, "value_not_in_list"))
    gen = gen_for(invert_tool())
    with pytest.raises(ServiceError) as err:
        await service.submit(gen)
    assert not err.value.retryable
    assert err.value.node == "2"
    assert "magic" in err.value.message
    deleted = [r.body for r in fake.requests if r.path in ("/queue", "/interrupt") and r.method == "POST"]
    assert {"delete": [gen.generation_id]} in deleted
    assert {"prompt_id": gen.generation_id} in deleted


async def test_real_validation_of_a_bad_link(service: ComfyUIService) -> None:
    tool = invert_tool()
    tool.metadata["workflow"]["2"]["inputs"]["image"] = ["99", 0]
    with pytest.raises(ServiceError) as err:
        await service.submit(gen_for(tool))
    assert err.value.node == "2" and not err.value.retryable


async def test_runtime_error_is_a_failure_naming_the_node(
    service: ComfyUIService, fake: FakeComfyUI, host: FakeHost
) -> None:
    fake.script(Case.runtime_error())
    gen = gen_for(invert_tool())
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.FAILED
    assert final.error is not None and final.error.node == "3"
    assert "Saving image outside the output folder is not allowed" in final.error.message
    assert final.error.code == "Exception" and not final.error.retryable
    assert final.outputs is None


async def test_history_is_empty_while_running_and_poll_is_the_fallback(
    service: ComfyUIService, fake: FakeComfyUI
) -> None:
    fake.script(Case.success(hold=True), Case.success())
    first, second = gen_for(invert_tool()), gen_for(invert_tool())
    await service.submit(first)
    await service.submit(second)
    await fake.wait_running(first.generation_id)

    polled = await service.poll(first)
    assert polled.status is GenerationStatus.PROCESSING and polled.live_status == "running"
    waiting = await service.poll(second)
    assert waiting.status is GenerationStatus.PROCESSING and waiting.live_status == "queued (1 of 1)"
    assert fake.history == {}

    fake.release(first.generation_id)
    for gen in (first, second):
        for _ in range(200):
            update = await service.poll(gen)
            if update.status.terminal:
                break
            await fake_sleep()
        assert update.status is GenerationStatus.COMPLETED
        assert ArtifactRef.from_value(update.outputs["image"]) is not None  # type: ignore[index]


async def fake_sleep() -> None:
    import asyncio

    await asyncio.sleep(0.02)


async def test_restart_loses_history_and_the_listener_reconnects(
    service: ComfyUIService, fake: FakeComfyUI, host: FakeHost
) -> None:
    fake.script(Case.success(hold=True))
    gen = gen_for(invert_tool())
    await service.submit(gen)
    await fake.wait_running(gen.generation_id)
    connects = fake.ws_connects

    await fake.restart()
    with pytest.raises(ServiceError) as err:
        await service.poll(gen)
    assert err.value.retryable and err.value.code == "lost"
    assert "lost after a server restart" in err.value.message

    # The one websocket comes back by itself and carries the next prompt's completion.
    after = gen_for(invert_tool())
    await service.submit(after)
    final = await host.wait_for(after.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED
    assert fake.ws_connects > connects
    assert not any(u.status.terminal for u in host.updates[gen.generation_id])


async def test_cancel_interrupts_the_running_prompt(
    service: ComfyUIService, fake: FakeComfyUI, host: FakeHost
) -> None:
    fake.script(Case.success(hold=True), Case.success())
    running, pending = gen_for(invert_tool()), gen_for(invert_tool())
    await service.submit(running)
    await service.submit(pending)
    await fake.wait_running(running.generation_id)

    await service.cancel(pending)
    assert [p.prompt_id for p in fake.pending] == []
    await service.cancel(running)
    final = await host.wait_for(running.generation_id, is_terminal)
    assert final.status is GenerationStatus.CANCELLED
    assert final.live_status is not None and "interrupted at node 1" in final.live_status
    assert pending.generation_id not in fake.history


async def test_media_inputs_are_uploaded(service: ComfyUIService, fake: FakeComfyUI, host: FakeHost) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (10, 7), (1, 2, 3)).save(buf, format="PNG")
    ref = host.artifacts.put_bytes(buf.getvalue())
    tool = upload_tool()
    gen = gen_for(tool, {"image": ref.as_value()})
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED, final.error

    loaded = fake.posted_prompts()[0]["prompt"]["10"]["inputs"]["image"]
    assert loaded.startswith("toolweave/tw_") and loaded.endswith(".png")
    # The saved output (not the temp preview) is chosen, and it carries the uploaded bytes.
    out = ArtifactRef.from_value(final.outputs["image"])  # type: ignore[index]
    assert out is not None and out.filename and out.filename.startswith("scaled_")
    assert host.artifacts.read(out) == buf.getvalue()

    # The same bytes again: the same name (content-hash file names), no "(1)" copy.
    again = gen_for(tool, {"image": ref.as_value()})
    await service.submit(again)
    assert fake.posted_prompts()[1]["prompt"]["10"]["inputs"]["image"] == loaded


async def test_a_non_image_for_an_image_input_is_refused_before_upload(
    service: ComfyUIService, fake: FakeComfyUI, host: FakeHost
) -> None:
    # A text file named like an image (the artifact store believes the name), and a data: URI.
    text = host.artifacts.put_bytes(b"just some text, not pixels\n", None, "photo.png")
    assert text.mime_type == "image/png"
    for value in (text.as_value(), "data:image/png;base64,aGVsbG8gd29ybGQ="):
        with pytest.raises(ServiceError) as caught:
            await service.submit(gen_for(upload_tool(), {"image": value}))
        assert caught.value.code == "bad_input" and not caught.value.retryable
        assert "input 'image' is text, not an image; nothing was uploaded" in caught.value.message
    assert not [r for r in fake.requests if r.path == "/upload/image"]
    assert fake.posted_prompts() == []


async def test_text_animation_and_video_outputs(service: ComfyUIService, host: FakeHost) -> None:
    gen = gen_for(media_tool(), {"greeting": "bonjour"})
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED, final.error
    outputs = final.outputs or {}
    assert outputs["text"] == "bonjour world"
    assert ArtifactRef.from_value(outputs["animation"]).mime_type == "image/webp"  # type: ignore[union-attr]
    assert ArtifactRef.from_value(outputs["video"]).mime_type == "video/mp4"  # type: ignore[union-attr]


async def test_output_map_picks_nodes(service: ComfyUIService, host: FakeHost) -> None:
    tool = media_tool(
        outputMap={
            "text": {"node": "22", "kind": "text"},
            "animation": {"node": "27", "kind": "images"},
            "video": {"node": "26", "kind": "images"},
        }
    )
    gen = gen_for(tool, {"greeting": "hi"})
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    outputs = final.outputs or {}
    assert outputs["text"] == "hi world"
    animation = ArtifactRef.from_value(outputs["animation"])
    assert animation is not None and animation.filename == "apng_00001_.png"


async def test_missing_output_is_a_clear_failure(service: ComfyUIService, host: FakeHost) -> None:
    tool = invert_tool(outputMap={"image": {"node": "7", "kind": "images"}})
    gen = gen_for(tool)
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.FAILED
    assert final.error is not None and "node 7 produced no images" in final.error.message


async def test_external_nodes_are_the_inputs_without_an_input_map(
    service: ComfyUIService, host: FakeHost, fake: FakeComfyUI
) -> None:
    workflow = {
        "5": {
            "class_type": "ComfyUIDeployExternalText",
            "inputs": {"input_id": "subject", "default_value": "a cat", "display_name": "Subject"},
        },
        "6": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": ["5", 0], "string_b": "!", "delimiter": ""},
        },
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["6", 0]}},
    }
    tool = ToolDefinition.model_validate(
        {
            "toolId": "shout",
            "service": "comfyui",
            "inputSchema": {"subject": {"type": "string"}},
            "outputSchema": {"text": {"type": "string"}},
            "metadata": {"workflow": workflow},
        }
    )
    gen = gen_for(tool, {"subject": "a dog"})
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.outputs == {"text": "a dog!"}
    node = fake.posted_prompts()[0]["prompt"]["5"]["inputs"]
    assert node["input_id"] == "subject" and node["default_value"] == "a dog"


async def test_workflow_file_relative_to_the_definition(
    service: ComfyUIService, host: FakeHost, tmp_path: Path
) -> None:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "invert.api.json").write_text(json.dumps(sample("run1_invert.json")["request"]["prompt"]))
    tool = invert_tool(workflow="invert.api.json")
    tool._source = str(folder / "invert.yaml")
    gen = gen_for(tool)
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED

    broken = invert_tool(workflow="missing.json")
    broken._source = str(folder / "invert.yaml")
    with pytest.raises(ServiceError, match=r"cannot read workflow file 'missing\.json'"):
        await service.submit(gen_for(broken))


async def test_recovery_reattaches_instead_of_resubmitting(
    service: ComfyUIService, fake: FakeComfyUI, host: FakeHost
) -> None:
    fake.script(Case.success(hold=True))
    gen = gen_for(invert_tool())
    await service.submit(gen)
    await fake.wait_running(gen.generation_id)

    again = gen_for(invert_tool(), generation_id=gen.generation_id, recovering=True)
    submission = await service.submit(again)
    assert submission.platform_run_id == gen.generation_id
    assert submission.update is not None and submission.update.status is GenerationStatus.PROCESSING
    assert len(fake.posted_prompts()) == 1

    fake.release()
    await host.wait_for(gen.generation_id, is_terminal)
    done = await service.submit(again)
    assert done.update is not None and done.update.status is GenerationStatus.COMPLETED
    assert len(fake.posted_prompts()) == 1


async def test_configuration_errors_are_clear(
    service: ComfyUIService, host: FakeHost, tmp_path: Path
) -> None:
    with pytest.raises(ServiceError, match="names ComfyUI server 'gpu2', which is not configured"):
        await service.submit(gen_for(invert_tool(server="gpu2")))
    bad = invert_tool(workflow={"nodes": [], "links": []})
    with pytest.raises(ServiceError, match="not in API format"):
        await service.submit(gen_for(bad))
    nothing = ComfyUIService(host, Settings(home=tmp_path))
    with pytest.raises(ServiceError, match="no ComfyUI server is configured"):
        await nothing.submit(gen_for(invert_tool()))
    with pytest.raises(WebhookRejected):
        service.parse_webhook({}, b"{}")


async def test_unreachable_server_is_retryable(host: FakeHost, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(
        home=tmp_path,
        comfyui_servers=[ComfyServer("gone", f"http://127.0.0.1:{port}")],
        http_timeout_seconds=2.0,
    )
    svc = ComfyUIService(host, settings)
    try:
        with pytest.raises(ServiceError) as err:
            await svc.submit(gen_for(invert_tool()))
        assert err.value.retryable and err.value.code == "unreachable"
        assert f"ComfyUI server gone (http://127.0.0.1:{port})" in str(err.value)  # which server, where
    finally:
        await svc.close()


async def test_tools_built_by_the_importer_run(service: ComfyUIService, host: FakeHost) -> None:
    from toolweave.comfy import tool_from_workflow

    workflow = sample("run4_text_anim_video.json")["request"]["prompt"]
    tool = tool_from_workflow(workflow, service="comfyui", object_info=None, name="media")
    gen = gen_for(tool, {"string_20": "salut"})
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED, final.error
    outputs = final.outputs or {}
    assert outputs["text"] == "salut world"
    assert ArtifactRef.from_value(outputs["video"]).mime_type == "video/mp4"  # type: ignore[union-attr]
    assert ArtifactRef.from_value(outputs["image_24"]).mime_type == "image/webp"  # type: ignore[union-attr]

    scale = tool_from_workflow(
        sample("run3_upload_scale.json")["request"]["prompt"],
        service="comfyui",
        object_info=None,
        name="scale",
    )
    ref = host.artifacts.put_bytes(SAMPLE_PNG)
    gen = gen_for(scale, {"image": ref.as_value()})
    await service.submit(gen)
    final = await host.wait_for(gen.generation_id, is_terminal)
    assert final.status is GenerationStatus.COMPLETED, final.error
    assert host.artifacts.read(ArtifactRef.from_value(final.outputs["image"])) == SAMPLE_PNG  # type: ignore[arg-type,index]


async def test_an_output_file_gone_from_the_server_is_a_failure(
    service: ComfyUIService, fake: FakeComfyUI
) -> None:
    fake.script(Case.success(hold=True))
    gen = gen_for(invert_tool())
    await service.submit(gen)
    await fake.wait_running(gen.generation_id)
    service._untrack(gen.generation_id)  # as after a restart of ours: only polling follows it
    fake.release()
    while gen.generation_id not in fake.history:
        await fake_sleep()
    fake.files.clear()
    update = await service.poll(gen)
    assert update.status is GenerationStatus.FAILED
    assert update.error is not None and update.error.code == "output_missing" and update.error.node == "3"


async def test_validate_live_checks_tools_against_their_servers_object_info(
    fake: FakeComfyUI, tmp_path: Path
) -> None:
    """`toolweave validate --live`: a tool using a node class its configured server lacks is a
    problem when it is validated, not when it runs."""
    import os
    import subprocess
    import sys

    example = EXAMPLES / "comfy-invert.yaml"
    env = {**os.environ, "TOOLWEAVE_HOME": str(tmp_path / "home"),
           "TOOLWEAVE_COMFYUI_SERVERS": f"gpu={fake.base_url}"}

    def validate() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "toolweave.cli", "validate", str(example), "--live"],
                              env=env, capture_output=True, text=True, timeout=60, check=False)

    ok = await asyncio.to_thread(validate)
    assert ok.returncode == 0, ok.stderr
    fake.missing_classes = {"ImageInvert"}
    refused = await asyncio.to_thread(validate)
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[0] == (
        f"{example}: metadata.workflow: node 2 uses ImageInvert, which {fake.base_url}/object_info does not have"
    )
    assert [r.path for r in fake.requests].count("/object_info") == 2


async def test_an_unreachable_object_info_is_named_without_its_credentials() -> None:
    """`validate --object-info URL` / `--live` against a server that does not answer: the URL is
    named without the user and password it carries, and the error is a sentence, not a repr."""
    import socket

    from toolweave.comfy import ObjectInfo, WorkflowImportError

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(WorkflowImportError) as refused:
        await ObjectInfo.from_url(f"http://operator:s3cret-pass@127.0.0.1:{port}", request_timeout=5)
    message = str(refused.value)
    assert f"cannot fetch http://127.0.0.1:{port}/object_info: ConnectError:" in message, message
    assert "s3cret" not in message and "operator" not in message and "ConnectError(" not in message
