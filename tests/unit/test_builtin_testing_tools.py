"""The test-only tools: registration, instant, sleep, fail_n_times, slow_async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.helpers import LocalHost, generation_context

from toolweave.model.status import GenerationStatus
from toolweave.services.base import GenerationContext, ServiceError
from toolweave.services.builtin import LEDGER_NAME, BuiltinService, builtin_tool_definitions
from toolweave.settings import Settings


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[LocalHost]:
    async with LocalHost(tmp_path) as h:
        yield h


def make(host: LocalHost, tmp_path: Path) -> BuiltinService:
    """A service as one worker process would have it; services sharing ``tmp_path`` share state."""
    return BuiltinService(host, test_tools=True, state_dir=tmp_path / "state", ledger_dir=tmp_path / "ledger")


def ctx(service: BuiltinService, tool_id: str, inputs: dict[str, object], **kw: object) -> GenerationContext:
    return generation_context(service.tool(tool_id).definition, inputs, **kw)  # type: ignore[arg-type]


def test_test_tools_only_when_asked() -> None:
    plain = {d.tool_id for d in builtin_tool_definitions()}
    full = {d.tool_id for d in builtin_tool_definitions(test_tools=True)}
    assert not any(t.startswith("test.") for t in plain)
    assert full - plain == {"test.instant", "test.sleep", "test.fail_n_times", "test.slow_async"}


async def test_test_tools_are_unknown_when_disabled(host: LocalHost) -> None:
    with pytest.raises(ServiceError) as err:
        BuiltinService(host).tool("test.instant")
    assert "not enabled" in err.value.message


async def test_instant_echoes(host: LocalHost, tmp_path: Path) -> None:
    service = make(host, tmp_path)
    sub = await service.submit(ctx(service, "test.instant", {"value": 41, "note": "hi"}))
    assert sub.update is not None and sub.update.status is GenerationStatus.COMPLETED
    assert sub.update.outputs == {"value": 42, "note": "hi"}
    sub = await service.submit(ctx(service, "test.instant", {}))
    assert sub.update is not None and sub.update.outputs == {"value": 1, "note": ""}
    with pytest.raises(ServiceError) as err:
        await service.submit(ctx(service, "test.instant", {"value": "x"}))
    assert "'value'" in err.value.message and not err.value.retryable


async def test_sleep_returns_its_seconds(host: LocalHost, tmp_path: Path) -> None:
    service = make(host, tmp_path)
    sub = await service.submit(ctx(service, "test.sleep", {"seconds": 0.01}))
    assert sub.update is not None and sub.update.outputs == {"slept": 0.01}


async def test_sleep_past_the_timeout_is_a_retryable_timeout(host: LocalHost, tmp_path: Path) -> None:
    service = make(host, tmp_path)
    with pytest.raises(ServiceError) as err:
        await service.submit(ctx(service, "test.sleep", {"seconds": 30}, timeout_seconds=0.05))
    assert err.value.code == "timeout" and err.value.retryable


async def test_fail_n_times_counts_across_processes(host: LocalHost, tmp_path: Path) -> None:
    # two service instances over the same state folder stand for two worker processes
    first, second = make(host, tmp_path), make(host, tmp_path)
    inputs = {"n": 2, "key": "k1"}
    for attempt, service in enumerate([first, second], start=1):
        with pytest.raises(ServiceError) as err:
            await service.submit(ctx(service, "test.fail_n_times", inputs, attempt=attempt))
        assert err.value.retryable and err.value.details is not None
        assert err.value.details["attempt"] == attempt
    sub = await first.submit(ctx(first, "test.fail_n_times", inputs, attempt=3))
    assert sub.update is not None and sub.update.outputs == {"attempts": 3, "key": "k1"}
    # another key has its own count
    with pytest.raises(ServiceError):
        await first.submit(ctx(first, "test.fail_n_times", {"n": 1, "key": "k2"}))


async def test_fail_n_times_without_state_uses_the_attempt(host: LocalHost) -> None:
    service = BuiltinService(host, test_tools=True)
    assert service.state_dir is None
    with pytest.raises(ServiceError) as err:
        await service.submit(ctx(service, "test.fail_n_times", {"n": 1, "retryable": False}, attempt=1))
    assert not err.value.retryable
    sub = await service.submit(ctx(service, "test.fail_n_times", {"n": 1}, attempt=2))
    assert sub.update is not None and sub.update.outputs == {"attempts": 2, "key": "run-1/step-1"}


def test_state_dir_comes_from_env_or_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = object()
    monkeypatch.delenv("TOOLWEAVE_TEST_STATE", raising=False)
    monkeypatch.setenv("TOOLWEAVE_TEST_LEDGER", str(tmp_path / "ledger"))
    service = BuiltinService(host, test_tools=True, settings=Settings(home=tmp_path / "home"))  # type: ignore[arg-type]
    assert service.state_dir == tmp_path / "home" / "test-state"
    assert service.ledger_dir == tmp_path / "ledger"
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "env-state"))
    service = BuiltinService(host, test_tools=True, settings=Settings(home=tmp_path / "home"))  # type: ignore[arg-type]
    assert service.state_dir == tmp_path / "env-state"


def ledger(tmp_path: Path) -> list[str]:
    path = tmp_path / "ledger" / LEDGER_NAME
    return path.read_text().splitlines() if path.exists() else []


async def test_slow_async_submit_poll_complete_with_gate(host: LocalHost, tmp_path: Path) -> None:
    service = make(host, tmp_path)
    gate = tmp_path / "gate"
    gen = ctx(service, "test.slow_async", {"seconds": 3600, "gate": str(gate), "note": "n1"}, generation_id="g1")
    sub = await service.submit(gen)
    assert sub.update is None and sub.platform_run_id is not None
    assert sub.poll_after_seconds is not None and 0 < sub.poll_after_seconds <= 1
    polled = ctx(service, "test.slow_async", gen.inputs, generation_id="g1", platform_run_id=sub.platform_run_id)
    update = await service.poll(polled)
    assert update.status is GenerationStatus.PROCESSING and update.platform_run_id == sub.platform_run_id
    gate.write_text("go")
    update = await service.poll(polled)
    assert update.status is GenerationStatus.COMPLETED
    assert update.outputs is not None and update.outputs["note"] == "n1"
    assert ledger(tmp_path) == ["g1"]


async def test_slow_async_reattaches_across_processes(host: LocalHost, tmp_path: Path) -> None:
    first = make(host, tmp_path)
    gen = ctx(first, "test.slow_async", {"seconds": 0}, generation_id="g2")
    sub1 = await first.submit(gen)
    # a "restarted worker": a fresh service over the same state, recovering the same generation
    second = make(host, tmp_path)
    sub2 = await second.submit(ctx(second, "test.slow_async", {"seconds": 0}, generation_id="g2", recovering=True))
    assert sub2.platform_run_id == sub1.platform_run_id
    other = await second.submit(ctx(second, "test.slow_async", {"seconds": 0}, generation_id="g3"))
    assert other.platform_run_id != sub1.platform_run_id
    assert ledger(tmp_path) == ["g2", "g3"]  # each generation submitted once
    update = await second.poll(ctx(second, "test.slow_async", {"seconds": 0}, generation_id="g2",
                                   platform_run_id=sub1.platform_run_id))
    assert update.status is GenerationStatus.COMPLETED


async def test_slow_async_logs_a_creation_whose_creator_died_before_logging_it(
    host: LocalHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between the backend's creating the run and logging it (the crash test's
    window): the next submission of that generation re-attaches and logs the creation, once."""
    from toolweave.services.builtin.testing import REATTACHED_NAME, SlowAsync

    first = make(host, tmp_path)
    real = SlowAsync._append_ledger

    def killed(self: SlowAsync, generation_id: str, name: str = LEDGER_NAME) -> None:
        raise KeyboardInterrupt("killed between creating the run and logging it")

    monkeypatch.setattr(SlowAsync, "_append_ledger", killed)
    with pytest.raises(KeyboardInterrupt):
        await first.submit(ctx(first, "test.slow_async", {"seconds": 0}, generation_id="g4"))
    monkeypatch.setattr(SlowAsync, "_append_ledger", real)
    assert not (tmp_path / "ledger" / LEDGER_NAME).exists()
    second = make(host, tmp_path)
    await second.submit(ctx(second, "test.slow_async", {"seconds": 0}, generation_id="g4", recovering=True))
    await second.submit(ctx(second, "test.slow_async", {"seconds": 0}, generation_id="g4", recovering=True))
    assert ledger(tmp_path) == ["g4"]  # the creation, logged once
    assert (tmp_path / "ledger" / REATTACHED_NAME).read_text().split() == ["g4"]  # the second re-attached


async def test_slow_async_elapsed_time_completes(host: LocalHost, tmp_path: Path) -> None:
    service = make(host, tmp_path)
    gen = ctx(service, "test.slow_async", {"seconds": 0.05}, generation_id="g4")
    sub = await service.submit(gen)
    polled = ctx(service, "test.slow_async", gen.inputs, generation_id="g4", platform_run_id=sub.platform_run_id)
    for _ in range(200):
        update = await service.poll(polled)
        if update.status.terminal:
            break
        await asyncio.sleep(0.02)
    assert update.status is GenerationStatus.COMPLETED
    assert update.outputs is not None and update.outputs["waited"] >= 0.05


async def test_slow_async_cancel_and_fail(host: LocalHost, tmp_path: Path) -> None:
    service = make(host, tmp_path)
    gen = ctx(service, "test.slow_async", {"seconds": 3600}, generation_id="g5")
    sub = await service.submit(gen)
    await service.cancel(ctx(service, "test.slow_async", gen.inputs, generation_id="g5",
                             platform_run_id=sub.platform_run_id))
    update = await service.poll(ctx(service, "test.slow_async", gen.inputs, generation_id="g5",
                                    platform_run_id=sub.platform_run_id))
    assert update.status is GenerationStatus.CANCELLED
    failing = ctx(service, "test.slow_async", {"seconds": 0, "fail": True}, generation_id="g6")
    sub = await service.submit(failing)
    update = await service.poll(ctx(service, "test.slow_async", failing.inputs, generation_id="g6",
                                    platform_run_id=sub.platform_run_id))
    assert update.status is GenerationStatus.FAILED and update.error is not None
    assert not update.error.retryable


async def test_slow_async_in_memory_and_id_fallback(host: LocalHost) -> None:
    service = BuiltinService(host, test_tools=True)  # no state folder: runs kept in memory
    gen = ctx(service, "test.slow_async", {"seconds": 0}, generation_id="g7")
    sub = await service.submit(gen)
    assert (await service.submit(gen)).platform_run_id == sub.platform_run_id
    # a process that never saw the submission still finishes it from the deadline in the run id
    stranger = BuiltinService(host, test_tools=True)
    update = await stranger.poll(ctx(stranger, "test.slow_async", {"seconds": 0}, generation_id="g7",
                                     platform_run_id=sub.platform_run_id))
    assert update.status is GenerationStatus.COMPLETED
    with pytest.raises(ServiceError) as err:
        await stranger.poll(ctx(stranger, "test.slow_async", {}, generation_id="nope", platform_run_id="junk"))
    assert err.value.code == "not_found"
