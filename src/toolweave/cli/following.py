"""Following a run from the command line until it ends (or waits for a person's answer): its
events as lines or a live table, with a worker in this process when none is alive, Ctrl-C
stopping only the following (the run goes on)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

from toolweave.cli.common import Interrupted, console, exit_code, print_json
from toolweave.cli.render import event_line, output_files, render_progress, summary
from toolweave.model.status import RunStatus

if TYPE_CHECKING:
    from toolweave.app import App

POLL_SECONDS = 0.2
"""How often a followed run is read once it has been going a while."""
FIRST_POLL_SECONDS = 0.005
"""The first look again: a builtin tool's run ends within milliseconds (the wait doubles up to ``POLL_SECONDS``)."""
LIVENESS_CHECK_SECONDS = 5.0


class SigintCatcher:
    """Turn Ctrl-C into an event while following a run (the default handler elsewhere)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._installed = False

    def __enter__(self) -> SigintCatcher:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self.event.set)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


class InProcessWorker:
    """A worker in this process, started when no other worker is alive, stopped gracefully."""

    def __init__(self, app: App, slots: int | None = None) -> None:
        self.app = app
        self.slots = slots
        self.task: asyncio.Task[None] | None = None
        self.worker: Any = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if self.running:
            return
        self.worker = self.app.make_worker(self.slots)
        self.task = asyncio.create_task(self.app.run_worker(self.worker, kind="cli"), name="toolweave-cli-worker")

    async def ensure(self, policy: str) -> None:
        """``always``: run one; ``auto``: run one when no worker is alive; ``never``: don't."""
        if self.running or policy == "never":
            return
        if policy == "always" or not await self.app.live_workers():
            self.start()

    async def stop(self, grace: float = 30.0) -> None:
        if self.task is None:
            return
        self.worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        except Exception:  # the worker's own failure was logged; the run state is in the store
            pass


async def follow(
    app: App,
    run_id: str,
    account: str,
    console: Console,
    *,
    worker: str = "auto",
    view: str = "auto",
    slots: int | None = None,
    after: int = 0,
) -> dict[str, Any]:
    """Follow a run until it ends (or waits for a person's answer) and return its detail.

    ``worker``: ``auto`` runs an in-process worker whenever no live worker is announced (checked
    again every few seconds), ``always``/``never`` as named. ``view``: ``live`` (a table redrawn in
    place), ``lines`` (one line per event), ``quiet``; ``auto`` picks ``live`` on a terminal.
    Events are printed from after event id ``after``. Ctrl-C raises ``Interrupted`` after
    stopping the in-process worker; the run goes on.
    """
    if view == "auto":
        view = "live" if console.is_terminal else "lines"
    own = InProcessWorker(app, slots)
    last_event = after
    started = time.monotonic()
    with SigintCatcher() as sigint:
        await own.ensure(worker)
        next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
        pause = FIRST_POLL_SECONDS
        live: Live | None = None
        try:
            run = await app.get_run(run_id, account)
            if view == "live":
                live = Live(render_progress(run, started), console=console, refresh_per_second=8, transient=True)
                live.start()
            while True:
                events = await app.events(run_id, account, last_event)
                if events:
                    last_event = events[-1]["id"]
                    if view == "lines":
                        for event in events:
                            console.print(event_line(event), highlight=False, soft_wrap=True)
                run = await app.get_run(run_id, account)
                if live is not None:
                    live.update(render_progress(run, started))
                if RunStatus(run["status"]).terminal or run["status"] == RunStatus.WAITING_INPUT.value:
                    if view == "lines":  # the last events may have been appended with the status
                        for event in await app.events(run_id, account, last_event):
                            console.print(event_line(event), highlight=False, soft_wrap=True)
                    return run
                if worker == "auto" and time.monotonic() >= next_check:
                    next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
                    await own.ensure(worker)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sigint.event.wait(), pause)
                pause = min(POLL_SECONDS, pause * 2)
                if sigint.event.is_set():
                    raise Interrupted(run_id)
        finally:
            if live is not None:
                live.stop()
            await own.stop()


async def finish(app: App, run: dict[str, Any], account: str, json_output: bool, output: Path | None) -> int:
    """Print a followed run's end (JSON or a summary; output files copied into ``output``); its exit code."""
    if json_output:
        if output is not None:
            await output_files(app, run, account, output)
        print_json(run)
    else:
        await summary(app, run, account, console, output)
    return exit_code(run["status"])
