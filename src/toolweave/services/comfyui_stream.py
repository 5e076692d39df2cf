"""The ``comfyui`` service's websockets: one per configured server (started lazily, reconnecting
with backoff), whose progress messages for the prompts it tracks become ``RunUpdate``s pushed
through ``host.report``; a prompt's end fetches its history and reports the terminal update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import websockets

from toolweave.model.records import RunUpdate
from toolweave.model.status import GenerationStatus
from toolweave.services.base import GenerationContext, ServiceError, ServiceHost
from toolweave.settings import ComfyServer

log = logging.getLogger("toolweave.services.comfyui")
_JITTER = random.Random()
"""Jitter of sleeps and backoffs: a source of its own, so the program's ``random`` (seeded by a host
program or a test framework) neither steers it nor is moved by it."""

MAX_FRAME_BYTES = 64 * 2**20
"""The largest websocket message read (ComfyUI's previews and messages are far smaller): a larger
one drops the connection, which is opened again, instead of being read into memory."""

_TRACKED_MAX = 10_000
"""How many in-flight prompts the websocket listeners remember (a cache; polling is the truth)."""


@dataclass
class _Tracked:
    gen: GenerationContext
    server: ComfyServer
    class_types: dict[str, str]
    done: set[str] = field(default_factory=set)
    current: str | None = None
    last: tuple[float | None, str | None] = (None, None)

    @property
    def total(self) -> int:
        return max(1, len(self.class_types))


class _Streaming:
    """The websocket side of ``ComfyUIService`` (a part of it)."""

    host: ServiceHost
    timeout: float
    client_id: str
    _listeners: dict[str, _Listener]
    _tracked: OrderedDict[str, _Tracked]
    _finishing: set[asyncio.Task[None]]

    if TYPE_CHECKING:

        async def _from_history(self, gen: GenerationContext, server: ComfyServer) -> RunUpdate: ...

    # websocket listeners -----------------------------------------------------------------------

    def _listener(self, server: ComfyServer) -> _Listener:
        listener = self._listeners.get(server.name)
        if listener is None:
            listener = _Listener(self, server)
            self._listeners[server.name] = listener
        return listener

    def _track(self, gen: GenerationContext, server: ComfyServer, workflow: Mapping[str, Any]) -> None:
        class_types = {
            str(k): str(v.get("class_type", "")) for k, v in workflow.items() if isinstance(v, dict)
        }
        self._tracked[gen.generation_id] = _Tracked(gen, server, class_types)
        self._tracked.move_to_end(gen.generation_id)
        while len(self._tracked) > _TRACKED_MAX:
            self._tracked.popitem(last=False)

    def _untrack(self, prompt_id: str) -> None:
        self._tracked.pop(prompt_id, None)

    async def _report(self, prompt_id: str, update: RunUpdate) -> None:
        try:
            await self.host.report(prompt_id, update)
        except Exception:
            log.exception("reporting an update of prompt %s failed", prompt_id)

    async def _on_message(self, server: ComfyServer, message: Mapping[str, Any]) -> None:
        kind = message.get("type")
        data = message.get("data")
        if not isinstance(data, dict):
            return
        prompt_id = data.get("prompt_id")
        tracked = self._tracked.get(prompt_id) if isinstance(prompt_id, str) else None
        if tracked is None or tracked.server.name != server.name:
            return
        assert isinstance(prompt_id, str)
        progress: float | None = None
        live: str | None = None
        if kind == "execution_start":
            progress, live = 0.0, "started"
        elif kind == "execution_cached":
            tracked.done.update(str(n) for n in data.get("nodes") or [])
            progress, live = len(tracked.done) / tracked.total, "started"
        elif kind == "executing":
            node = data.get("node")
            if node is None:
                self._untrack(prompt_id)
                self._finish(tracked)
                return
            if tracked.current is not None:
                tracked.done.add(tracked.current)
            tracked.current = str(node)
            live = f"executing node {node} {tracked.class_types.get(str(node), '')}".rstrip()
            progress = min(len(tracked.done), tracked.total - 1) / tracked.total
        elif kind == "progress":
            node = str(data.get("node"))
            value, maximum = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(maximum, (int, float)) and maximum > 0:
                within = min(1.0, value / maximum)
                progress = (min(len(tracked.done), tracked.total - 1) + within) / tracked.total
                live = (
                    f"executing node {node} {tracked.class_types.get(node, '')} {int(value)}/{int(maximum)}"
                )
        elif kind == "executed":
            tracked.done.add(str(data.get("node")))
            return
        else:
            return
        if progress is None:
            return
        progress = round(progress, 4)
        if (progress, live) == tracked.last:
            return
        tracked.last = (progress, live)
        await self._report(
            prompt_id,
            RunUpdate(
                status=GenerationStatus.PROCESSING,
                progress=progress,
                live_status=live,
                platform_run_id=prompt_id,
            ),
        )

    def _finish(self, tracked: _Tracked) -> None:
        task = asyncio.get_running_loop().create_task(self._finish_one(tracked))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def _finish_one(self, tracked: _Tracked) -> None:
        prompt_id = tracked.gen.generation_id
        try:
            update = await self._from_history(tracked.gen, tracked.server)
        except ServiceError as exc:
            # Leave it to polling: the engine's poll task reads history again.
            log.warning("prompt %s finished but its result could not be read: %s", prompt_id, exc.message)
            return
        await self._report(prompt_id, update)


class _Listener:
    """The one websocket of one server: connects lazily, reconnects with backoff and jitter."""

    def __init__(self, service: _Streaming, server: ComfyServer) -> None:
        self.service = service
        self.server = server
        self.connected = asyncio.Event()
        self.connects = 0
        self._task: asyncio.Task[None] | None = None
        base = server.base_url.rstrip("/")
        scheme, _, rest = base.partition("://")
        ws_scheme = "wss" if scheme == "https" else "ws"
        self.url = f"{ws_scheme}://{rest}/ws?clientId={service.client_id}"

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"comfyui-ws-{self.server.name}"
            )

    async def wait_connected(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), seconds)
        return self.connected.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.connected.clear()

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with websockets.connect(
                    self.url, open_timeout=self.service.timeout, max_size=MAX_FRAME_BYTES, ping_interval=20
                ) as ws:
                    self.connects += 1
                    self.connected.set()
                    delay = 0.2
                    async for frame in ws:
                        if isinstance(frame, bytes):
                            continue  # binary previews
                        try:
                            message = json.loads(frame)
                        except (ValueError, RecursionError):
                            continue
                        if isinstance(message, dict):
                            try:
                                await self.service._on_message(self.server, message)
                            except Exception:
                                log.exception("handling a ComfyUI message failed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info(
                    "websocket of ComfyUI server %s: %s; reconnecting", self.server.name, type(exc).__name__
                )
            self.connected.clear()
            await asyncio.sleep(delay * (0.5 + _JITTER.random()))
            delay = min(delay * 2, 30.0)
