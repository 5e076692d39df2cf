"""``toolweave telegram``: the bot by long polling, with a worker in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from toolweave.telegram.bot import TelegramBot

if TYPE_CHECKING:
    from toolweave.app import App

log = logging.getLogger("toolweave.telegram")


async def run_polling(app: App, stop: asyncio.Event, *, slots: int | None = None, worker: bool = True,
                      poll_timeout: int = 25) -> None:
    """Run the bot (and, with ``worker``, an embedded worker) until ``stop`` is set."""
    bot = TelegramBot(app)
    await bot.start()
    embedded = app.make_worker(slots) if worker else None
    worker_task = (
        asyncio.create_task(app.run_worker(embedded, kind="telegram"), name="toolweave-worker") if embedded else None
    )
    me = bot.bot.username
    log.info("bot @%s is polling for updates%s", me, " with an embedded worker" if embedded else "")
    try:
        await bot.poll(stop, timeout=poll_timeout)
    finally:
        if embedded is not None and worker_task is not None:
            embedded.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker_task, 30)
        await bot.stop()


async def main(app: App, *, slots: int | None = None, worker: bool = True) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await run_polling(app, stop, slots=slots, worker=worker)
