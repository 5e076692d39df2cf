"""Event streams within bounds (both stores, the real API on loopback): an account has at most
``sse_max_streams_per_account`` open at once (429 with Retry-After beyond, the slot back when a
stream closes, other accounts unaffected), a stream reads a long run's events a page at a
time, never more ahead of its client than a page and what the stream holds, and a client that
stops reading while its run goes on makes the server hold a bounded number of live events for it,
and gets every one of them once it reads again."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.integration.test_api import JOBS, Server, assert_problem, running_server

from toolweave import watching
from toolweave.api import sse
from toolweave.store import events as events_q

PAGE = getattr(watching, "PAGE_EVENTS", 500)  # (the constant, or what a page should hold on code without it)

WAITS = {  # a run that waits for a person: it stays open without holding a worker
    "jobId": "waits",
    "steps": [{"stepId": "ask", "ask": {"kind": "approve", "question": "Go on?", "timeout": "1h"}}],
}


# The socket buffers between the server and a client that stops reading, fixed small and known
# (left alone, the kernel grows a sender's up to net.ipv4.tcp_wmem's largest, which varies by machine)
SEND_BUFFER = RECEIVE_BUFFER = 64 * 1024
EVENT_BYTES = 8000  # the size of the padding of each event a run appends while its client reads nothing


@pytest.fixture
async def server(tmp_path: Path, db_url: str) -> AsyncIterator[Server]:
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "waits.yaml").write_text(yaml.safe_dump(WAITS))
    async with running_server(tmp_path / "home", database_url=db_url, definitions=[JOBS, folder],
                              sse_max_streams_per_account=2, send_buffer_bytes=SEND_BUFFER) as srv:
        yield srv


def _granted(option: int, size: int) -> int:
    """The buffer the kernel gives a TCP socket asked for ``size`` (doubled, capped by net.core)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, option, size)
        return int(probe.getsockopt(socket.SOL_SOCKET, option))


def _events_in_flight() -> int:
    """At most how many of the padded events the way to a client that reads nothing can hold: the
    server's send buffer and the client's receive buffer as the kernel grants them, and a
    generous 256 kB for what the server's transport and the client's HTTP reader buffer."""
    room = _granted(socket.SO_SNDBUF, SEND_BUFFER) + _granted(socket.SO_RCVBUF, RECEIVE_BUFFER) + 256 * 1024
    return room // EVENT_BYTES + 1


@contextlib.asynccontextmanager
async def _following(client: httpx.AsyncClient, run_id: str) -> AsyncIterator[httpx.Response]:
    """An open event stream of the run, its first line read (the server holds it open)."""
    async with client.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
        lines = response.aiter_lines()  # kept: an abandoned line iterator closes the connection
        if response.status_code == 200:
            await anext(lines)
        yield response


async def test_an_account_has_at_most_its_share_of_open_event_streams(server: Server) -> None:
    async with server.client(server.alice) as alice, server.client(server.bob) as bob:
        mine = (await alice.post("/api/v1/runs", json={"jobId": "waits"})).json()["jobRunId"]
        theirs = (await bob.post("/api/v1/runs", json={"jobId": "waits"})).json()["jobRunId"]
        async with contextlib.AsyncExitStack() as open_streams:
            for _ in range(2):
                assert (await open_streams.enter_async_context(_following(alice, mine))).status_code == 200
            response = await alice.get(f"/api/v1/runs/{mine}/events")
            problem = assert_problem(response, 429)
            assert "sse_max_streams_per_account" in problem["detail"] and int(response.headers["Retry-After"]) > 0
            async with _following(bob, theirs) as other:  # another account has its own share
                assert other.status_code == 200
        # the streams closed by their clients give their slots back
        for _ in range(200):
            if not server.app.event_hub._watchers:
                break
            await asyncio.sleep(0.05)
        for _ in range(3):
            async with _following(alice, mine) as again:
                assert again.status_code == 200
        # a 404 and a 204 take no slot for good: two streams open after them
        await alice.post(f"/api/v1/runs/{mine}/cancel")
        await bob.post(f"/api/v1/runs/{theirs}/cancel")
        for _ in range(200):
            if (await alice.get(f"/api/v1/runs/{mine}")).json()["status"] == "cancelled":
                break
            await asyncio.sleep(0.05)
        last = (await server.app.events(mine, "alice", 0))[-1]["id"]
        for _ in range(3):
            assert_problem(await alice.get(f"/api/v1/runs/{theirs}/events"), 404)
            assert (await alice.get(f"/api/v1/runs/{mine}/events", params={"after": last})).status_code == 204
        async with _following(alice, mine) as first, _following(alice, mine) as second:
            assert first.status_code == second.status_code == 200


async def test_a_stream_reads_a_long_runs_events_a_page_at_a_time(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = server.app
    async with server.client(server.alice) as alice:
        run_id = (await alice.post("/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": 1}})).json()["jobRunId"]
        run = await app.wait(run_id, timeout=30)
        assert run["status"] == "completed"
    filler = 3 * PAGE + 7
    now = time.time()
    await app.store.tx(events_q.append_many, [
        {"run_id": run_id, "type": "step.progress", "step_id": None, "data": {"n": n}, "created_at": now}
        for n in range(filler)
    ])
    reads: list[int] = []  # events each store read handed over

    def since(tx: Any, run: str, after: int = 0, limit: int = 1000) -> list[events_q.Event]:
        found = real_since(tx, run, after, limit)
        reads.append(len(found))
        return found

    def new_events(tx: Any, watched: list[tuple[str, int]]) -> Any:
        result = real_new_events(tx, watched)
        reads.append(len(result[0] if isinstance(result, tuple) else result))
        return result

    real_since, real_new_events = events_q.since, watching._new_events
    monkeypatch.setattr(events_q, "since", since)
    monkeypatch.setattr(watching, "_new_events", new_events)

    # a client that takes ten events and waits: the stream has read a page and what it holds, no more
    taken = 0
    lines = sse.stream(app, run_id, "alice", 0)
    async for text in lines:
        taken += text.startswith("id: ")
        if taken == 10:
            break
    for _ in range(20):
        await asyncio.sleep(0.01)  # time for a stream that reads ahead to do so
    assert sum(reads) <= PAGE, reads
    await lines.aclose()

    # over HTTP, to its end: every event once, in order, no read larger than a page
    reads.clear()
    async with server.client(server.alice) as alice, alice.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
        ids = [int(line[4:]) async for line in response.aiter_lines() if line.startswith("id: ")]
    assert reads and max(reads) <= PAGE, reads
    everything = await app.events(run_id, "alice", 0, limit=10 * filler)
    assert len(everything) > filler and ids == [e["id"] for e in everything]


async def test_a_client_that_stops_reading_holds_a_bounded_number_of_live_events(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = server.app
    live = getattr(watching, "LIVE_EVENTS", PAGE)  # (the bound, or a page on code without one)
    held = {"now": 0, "most": 0}  # events handed to the stream's watchers and not taken yet

    class CountingQueue(asyncio.Queue):  # type: ignore[type-arg]
        def put_nowait(self, item: Any) -> None:
            super().put_nowait(item)
            held["now"] += len(item or ())
            held["most"] = max(held["most"], held["now"])

        def get_nowait(self) -> Any:
            item = super().get_nowait()
            held["now"] -= len(item or ())
            return item

    @dataclasses.dataclass(eq=False)
    class CountedWatcher(watching._Watcher):
        queue: asyncio.Queue = dataclasses.field(default_factory=CountingQueue)  # type: ignore[type-arg]

    monkeypatch.setattr(watching, "_Watcher", CountedWatcher)
    taken: list[int] = []  # events the stream sent its client (into the socket)
    real_format = sse.format_event

    def format_event(event: dict[str, Any]) -> str:
        taken.append(event["id"])
        return real_format(event)

    monkeypatch.setattr(sse, "format_event", format_event)

    # a client with a receive buffer of its own size (not grown to megabytes) that reads the stream's first line, then
    # nothing; the run appends what fills the sockets' buffers and three times the bound more
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)])
    chunks = -(-(_events_in_flight() + 3 * live) // 250)
    appended = 250 * chunks
    async with server.client(server.alice, transport=transport) as alice:
        run_id = (await alice.post("/api/v1/runs", json={"jobId": "waits"})).json()["jobRunId"]
        async with alice.stream("GET", f"/api/v1/runs/{run_id}/events") as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            # the run goes on: many events of 8 kB (more than the sockets buffer), committed while the client reads nothing
            pad = "x" * EVENT_BYTES
            for chunk in range(chunks):
                now = time.time()
                await app.store.tx(events_q.append_many, [
                    {"run_id": run_id, "type": "step.progress", "step_id": "ask", "data": {"n": chunk * 250 + n, "pad": pad},
                     "created_at": now}
                    for n in range(250)
                ])
                for _ in range(5):
                    await asyncio.sleep(0.01)  # time for the hub's round and for the stream to send
            last = (await app.events(run_id, "alice", 0, limit=10_000))[-1]["id"]
            for _ in range(600):  # until the hub has read every event for the stream, or left it
                if all(w.after >= last for w in app.event_hub._watchers.get(run_id, ())):
                    break
                await asyncio.sleep(0.05)
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert len(taken) < appended - 2 * live  # the client did stop the stream
            assert held["most"] <= live, (held, len(taken))

            # the run ends; the client reads everything: every event once, in order
            await alice.post(f"/api/v1/runs/{run_id}/cancel")
            ids = [int(line[4:]) async for line in lines if line.startswith("id: ")]
    everything = [e["id"] for e in await app.events(run_id, "alice", 0, limit=10_000)]
    assert len(everything) > appended and everything[-1] > last
    assert ids == everything
