"""A step whose record failed is tried again while its worker lives.

The worker calls a service, then records the outcome (group commit; a batch that fails is
recorded one item at a time). When an item's record fails alone (here: the service answered
something its record cannot store; in life a connection lost mid-transaction, a full disk, a bug),
the handler gives up and says the task "will be retried when its lease expires". The task is
still leased to the worker, whose heartbeat extends every lease it holds: unless the worker hands
it back, the lease never expires while the worker lives, and the run waits for ever. Nothing
counts it as stranded (the generation has its dispatch task), so the sweep does not help either.

The same holds for a notification whose delivery raised outside its channel (the store failing
under the notifier). The service stands in for a backend that answers badly once: the second call of the generation
(``recovering``, as after a crash) answers well. On both stores, with a real worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from toolweave.app import App
from toolweave.engine.worker import Worker
from toolweave.model.records import RunUpdate
from toolweave.services.base import GenerationContext, Service, Submission
from toolweave.settings import Settings
from toolweave.store import tasks as tasks_q


class _AnswersBadlyOnce:
    """The builtin service, except that a generation's first call answers outputs whose record
    raises (an artifact reference whose size is not a number, in an output the tool does not
    declare: one whose references are granted, ``grants.made_media``)."""

    def __init__(self, inner: Service) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[str, bool]] = []

    async def submit(self, gen: GenerationContext) -> Submission:
        self.calls.append((gen.generation_id, gen.recovering))
        found = await self.inner.submit(gen)
        if gen.recovering or found.update is None:
            return found
        bad = {"kind": "artifact", "sha256": "0" * 64, "size": "not a number"}
        outputs = {**(found.update.outputs or {}), "files": bad}  # an output it does not declare
        return Submission(found.platform_run_id, RunUpdate(status=found.update.status, outputs=outputs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def app(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    monkeypatch.setenv("TOOLWEAVE_TEST_STATE", str(tmp_path / "state"))
    instance = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    yield instance
    await instance.aclose()


def _worker(app: App, services: Mapping[str, Service]) -> Worker:
    worker = app.make_worker(2, lease_seconds=1.0, heartbeat_seconds=0.1, idle_poll_seconds=0.1, sweep_seconds=0)
    worker.services = services
    return worker


async def test_a_dispatch_whose_record_failed_is_handed_back_and_runs_again(app: App) -> None:
    service = _AnswersBadlyOnce(app.services["builtin"])
    worker = _worker(app, {**app.services, "builtin": service})
    run_id = await app.submit("test.instant", {"value": 1}, account_id="acme")
    runner = asyncio.create_task(worker.run())
    try:
        run = await app.wait(run_id, timeout=30)
    finally:
        worker.stop()
        await runner
    assert run["status"] == "completed", run
    assert run["finalOutputs"] == {"value": 2, "note": ""}
    (generation,) = {g for g, _ in service.calls}
    assert service.calls == [(generation, False), (generation, True)]  # the second call may re-attach
    assert app.store.read_sync(lambda tx: tx.all("SELECT task_id FROM tasks")) == []



class _Inbox:
    """A channel that keeps what it is given."""

    name = "inbox"

    def __init__(self) -> None:
        self.got: list[Any] = []

    async def deliver(self, notification: Mapping[str, Any]) -> None:
        self.got.append(notification["payload"])


async def test_a_notification_whose_delivery_raised_is_handed_back_and_sent(app: App) -> None:
    inbox = _Inbox()
    app.notifier.add_channel(inbox)
    raised: list[int] = []

    async def deliver(task: tasks_q.Task) -> None:  # the notifier's first try fails outside its channel
        if not raised:
            raised.append(task.task_id)
            raise RuntimeError("the store went away under the notifier")
        await app.notifier.deliver(task)

    await app.outbox.queue("inbox", {}, {"text": "hello"}, event_type="note", account_id="acme", deliver_now=False)
    worker = _worker(app, app.services)
    worker.deliver = deliver
    runner = asyncio.create_task(worker.run())
    try:
        for _ in range(300):  # until it is sent (or 30 s: it never is while the lease is held)
            if inbox.got:
                break
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await runner
    assert raised and inbox.got == [{"text": "hello"}]
