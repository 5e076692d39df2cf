"""A hosted API that took the request and never answered (it stalls past the request's timeout,
or drops the connection): it may have done the work and charged for it, so the step's retry
policy does not send it again unless the tool says its request is harmless to repeat
(``idempotent: true``). A failure before anything was sent (connection refused) is still retried.
On both stores, against a raw-socket API on loopback (``tests/fakes/unanswering.py``)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.unanswering import UnansweringApi
from tests.helpers.worker import work_until_done

from toolweave.app import App
from toolweave.model.definitions import ToolDefinition
from toolweave.settings import Settings


@pytest.fixture
async def app(tmp_path: Path, db_url: str) -> AsyncIterator[App]:
    instance = App(Settings(home=tmp_path / "home", database_url=db_url))
    yield instance
    await instance.aclose()


def _writer(url: str, *, idempotent: bool, step_seconds: float | None = None) -> ToolDefinition:
    request: dict[str, Any] = {"url": f"{url}/v1/write", "json": {"prompt": "{{ prompt }}"}}
    if step_seconds is None:
        request["timeoutSeconds"] = 0.5
    return ToolDefinition.model_validate({
        "toolId": "writer", "service": "http", "timeoutSeconds": step_seconds,
        "inputSchema": {"prompt": {"type": "text", "required": True}},
        "outputSchema": {"text": {"type": "text"}},
        "costingModel": {"rateSource": "static", "staticCost": {"amount": 0.02}},
        "metadata": {"http": {
            "request": request,
            "idempotent": idempotent,
        }},
    })


async def _run(app: App, url: str, *, idempotent: bool, step_seconds: float | None = None) -> dict[str, Any]:
    assert app.registry.register(_writer(url, idempotent=idempotent, step_seconds=step_seconds)) == []
    _, problems = await app.register_job({
        "jobId": "write-once", "inputSchema": {"prompt": {"type": "text", "required": True}},
        "outputSchema": {"text": {"type": "text", "sourceStepId": "write", "sourceOutputName": "text"}},
        "steps": [{"stepId": "write", "toolId": "writer",
                   "errorHandling": {"strategy": "retry", "maxAttempts": 3, "backoffSeconds": 0.01},
                   "inputMappings": [{"sourceJobInput": "prompt", "targetInputName": "prompt"}]}],
    })
    assert problems == []
    run_id = await app.submit("write-once", {"prompt": "a fox"}, account_id="acme")
    return await work_until_done(app, run_id, timeout=60)


@pytest.mark.parametrize("mode", ["stall", "drop"])
async def test_a_request_sent_and_never_answered_is_not_sent_again(app: App, mode: Any) -> None:
    api = await UnansweringApi(mode).start()
    try:
        run = await _run(app, api.base_url, idempotent=False)
    finally:
        await api.stop()
    assert len(api.requests) == 1, api.requests  # the retry policy did not call the paid API again
    assert run["status"] == "failed", run["status"]
    [gen] = run["generations"]
    error = gen["error"]
    assert error["code"] == "unknown_outcome" and error["retryable"] is False, error
    cause = "timeout" if mode == "stall" else "disconnected"
    assert error["details"] == {"cause": cause, "maybePaid": True}, error
    said = "did not answer in time" if mode == "stall" else "dropped the connection before answering"
    assert said in error["message"] and "idempotent" in error["message"], error["message"]
    assert "may have taken the request and charged for it" in error["message"], error["message"]
    assert gen["costUsd"] == "0.02" and run["costUsd"] == "0.02"  # what the call may have cost, on the books


async def test_a_request_sent_and_unanswered_by_the_steps_deadline_is_not_sent_again(app: App) -> None:
    """The step's time (the tool's ``timeoutSeconds``, 1 s) ends before the request's own (30 s):
    the engine's deadline used to end the submit as a retryable timeout, and the retry paid again."""
    api = await UnansweringApi("stall").start()
    try:
        run = await _run(app, api.base_url, idempotent=False, step_seconds=1)
    finally:
        await api.stop()
    assert len(api.requests) == 1, api.requests
    assert run["status"] == "failed", run["status"]
    [gen] = run["generations"]
    error = gen["error"]
    assert error["code"] == "unknown_outcome" and error["retryable"] is False, error
    assert "did not finish within the step's 1 s" in error["message"], error["message"]
    assert error["details"] == {"cause": "timeout", "maybePaid": True}, error


@pytest.mark.parametrize("mode", ["stall", "drop"])
async def test_an_idempotent_tool_never_answered_is_sent_again(app: App, mode: Any) -> None:
    api = await UnansweringApi(mode, answer_after=1, answer={"text": "written"}).start()
    try:
        run = await _run(app, api.base_url, idempotent=True)
    finally:
        await api.stop()
    assert len(api.requests) == 2, api.requests
    assert run["status"] == "completed", run["error"]
    assert run["finalOutputs"]["text"] == "written"
    first, second = run["generations"]
    assert first["error"]["retryable"] is True and first["error"]["details"]["maybePaid"] is True, first["error"]
    assert second["status"] == "completed" and second["error"] is None
    assert first["error"]["code"] == ("timeout" if mode == "stall" else "disconnected")
    assert run["costUsd"] == "0.04"  # both calls on the books


async def test_a_request_that_could_not_connect_is_sent_again(app: App) -> None:
    """Nothing reached the API (connection refused): trying again cannot pay twice."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = await _run(app, f"http://127.0.0.1:{port}", idempotent=False)
    assert run["status"] == "failed", run["status"]
    assert len(run["generations"]) == 3  # every attempt the policy allows
    for gen in run["generations"]:
        assert gen["error"]["code"] == "unreachable" and gen["error"]["retryable"] is True, gen["error"]
        assert gen["costUsd"] is None


@pytest.mark.parametrize("mode", ["stall", "drop"])
async def test_a_comfydeploy_queue_request_never_answered_is_not_queued_again(tmp_path: Path, mode: Any) -> None:
    """ComfyUI Deploy takes no id of ours: a queue request it may have taken, unanswered, is
    ``unknown_outcome`` (not retryable) rather than queued, and paid for, again."""
    from tests.fakes.host import FakeHost
    from tests.integration.test_comfydeploy_service import API_KEY, deploy_tool, gen_for

    from toolweave.services.base import ServiceError
    from toolweave.services.comfydeploy import ComfyDeployService

    api = await UnansweringApi(mode).start()
    host = FakeHost(tmp_path)
    try:
        service = ComfyDeployService(host, Settings(home=tmp_path, comfydeploy_api_key=API_KEY,
                                                    comfydeploy_base_url=api.base_url, http_timeout_seconds=0.5))
        with pytest.raises(ServiceError) as raised:
            await service.submit(gen_for(deploy_tool(), {"prompt": "a fox"}))
    finally:
        await host.close()
        await api.stop()
    assert len(api.requests) == 1
    error = raised.value
    assert error.code == "unknown_outcome" and not error.retryable, error.info()
    assert error.details == {"cause": "no_answer", "maybePaid": True}
    assert "not queued again" in error.message


async def test_a_comfydeploy_queue_request_that_could_not_connect_is_retryable(tmp_path: Path) -> None:
    from tests.fakes.host import FakeHost
    from tests.integration.test_comfydeploy_service import API_KEY, deploy_tool, gen_for

    from toolweave.services.base import ServiceError
    from toolweave.services.comfydeploy import ComfyDeployService

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = FakeHost(tmp_path)
    try:
        service = ComfyDeployService(host, Settings(home=tmp_path, comfydeploy_api_key=API_KEY,
                                                    comfydeploy_base_url=f"http://127.0.0.1:{port}"))
        with pytest.raises(ServiceError) as raised:
            await service.submit(gen_for(deploy_tool(), {"prompt": "a fox"}))
    finally:
        await host.close()
    assert raised.value.code == "unreachable" and raised.value.retryable, raised.value.info()
