"""Worker presence: a worker run through ``App.run_worker`` is announced in the ``kv`` table
(namespace ``workers``) by a row that expires ``ttl`` seconds after its last refresh, refreshed every
``ttl / 3`` and removed when the worker ends; ``live_workers`` lists the unexpired ones, from any
process on any machine (the command line starts a worker of its own when none is alive)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toolweave.model.status import GenerationStatus, RunStatus
from toolweave.run_views import iso
from toolweave.store import kv as kv_q
from toolweave.store.db import Store, Tx

if TYPE_CHECKING:
    from toolweave.app import App
    from toolweave.engine.worker import Worker

log = logging.getLogger("toolweave")

WORKERS_NAMESPACE = "workers"
WORKER_TTL_SECONDS = 15.0


async def run_announced(app: App, worker: Worker, *, kind: str, ttl: float) -> None:
    """Run ``worker`` until ``worker.stop()``, announced meanwhile."""
    info = {
        "workerId": worker.worker_id, "kind": kind, "host": socket.gethostname(), "pid": os.getpid(),
        "slots": worker.slots, "startedAt": iso(time.time()),
    }

    async def beat() -> None:
        try:
            row = dict(info, heartbeatAt=iso(time.time()), inFlight=worker.in_flight, handled=worker.handled)
            await app.kv_set(WORKERS_NAMESPACE, worker.worker_id, row, ttl=ttl)
        except Exception:
            log.exception("announcing worker %s failed", worker.worker_id)

    async def announce() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            await beat()

    presence: asyncio.Task[None] | None = None
    try:
        # announced before it takes work: a run submitted as it starts is not told "no worker is running"
        await beat()
        presence = asyncio.create_task(announce(), name="toolweave-presence")
        await worker.run()
    finally:
        if presence is not None:
            presence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await presence
        with contextlib.suppress(Exception):
            await app.kv_set(WORKERS_NAMESPACE, worker.worker_id, None)


def waiting_reason(workers: list[dict[str, Any]]) -> str:
    """Why a queued run waits, in the words every front end shows."""
    if not workers:
        return "no worker is running (start one with: toolweave worker)"
    return "waiting for a free worker slot"


async def live_workers(store: Store) -> list[dict[str, Any]]:
    """The announced workers that are alive, by worker id."""
    return await store.read(live_workers_tx, time.time())


def live_workers_tx(tx: Tx, now: float) -> list[dict[str, Any]]:
    """``live_workers`` read in a transaction of the caller's."""
    return [dict(r.value, expiresAt=iso(r.expires_at)) for r in kv_q.entries(tx, WORKERS_NAMESPACE, now)]


def status_detail(detail: dict[str, Any], workers: Callable[[], list[dict[str, Any]]]) -> str | None:
    """A run's ``statusDetail`` (``detail`` as ``run_views.run_detail`` reads it): why it waits
    (queued; running with steps held back by their service's concurrency limit; asking).
    ``workers()`` gives the live workers, asked only for a queued run."""
    if detail["status"] == RunStatus.QUEUED.value:
        return waiting_reason(workers())
    if detail["status"] == RunStatus.RUNNING.value:
        held = [f"step {g['stepId']} is {g['liveStatus']}" for g in detail["generations"]
                if g["status"] == GenerationStatus.PENDING.value and g["liveStatus"]]
        return "; ".join(held) or None
    if detail["waitingFor"]:
        asks = "; ".join(f"step {q['stepId']} asks: {q['text']}" for q in detail["waitingFor"])
        return f"your run needs you ({asks})"
    return None
