"""Run callbacks: signed with HMAC-SHA256, retried when the receiver fails, final on a 4xx."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.helpers.loopback import serve_asgi
from tests.integration.test_api import running_server

from toolweave.notify.callback import CallbackChannel, sign, verify
from toolweave.notify.dispatcher import DeliveryError

SECRET = "whsec_tests_only"


class Receiver:
    """A callback receiver on loopback that answers with the statuses it is given, in turn."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None) -> None:
        self.statuses = statuses
        self.headers = headers or {}
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/hook", self.handle, methods=["POST"])])

    async def handle(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        status = self.statuses[min(len(self.received), len(self.statuses)) - 1]
        return Response("ok" if status < 300 else "no", status_code=status, headers=self.headers)


async def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_callback_arrives_signed_and_is_retried_when_the_receiver_first_fails(tmp_path: Path) -> None:
    receiver = Receiver([503, 200], headers={"Retry-After": "1"})
    async with serve_asgi(receiver.app) as hook_url, running_server(
        tmp_path / "home", callback_signing_secret=SECRET
    ) as server, server.client(server.alice) as c:
        response = await c.post(
            "/api/v1/runs",
            json={"toolId": "test.instant", "inputs": {"value": 41}, "callbackUrl": f"{hook_url}/hook"},
        )
        assert response.status_code == 201, response.text
        run_id = response.json()["jobRunId"]

        async def delivered() -> bool:
            run = (await c.get(f"/api/v1/runs/{run_id}")).json()
            return bool(run["notifications"]) and run["notifications"][0]["status"] == "delivered"

        await _wait_for(delivered)
        run = (await c.get(f"/api/v1/runs/{run_id}")).json()
    note = run["notifications"][0]
    assert note["channel"] == "callback" and note["eventType"] == "run.completed" and note["attempts"] == 2
    assert len(receiver.received) == 2
    (first_headers, _first_body), (headers, body) = receiver.received
    assert headers["x-toolweave-delivery"] == first_headers["x-toolweave-delivery"] == note["notificationId"]
    assert headers["x-toolweave-event"] == "run.completed"
    assert verify(SECRET.encode(), headers["x-toolweave-signature"], body)
    assert not verify(b"another secret", headers["x-toolweave-signature"], body)
    assert not verify(SECRET.encode(), headers["x-toolweave-signature"], body + b" ")
    document = json.loads(body)
    assert document["type"] == "run.completed" and document["id"] == note["notificationId"]
    assert document["data"]["runId"] == run_id and document["data"]["outputs"]["value"] == 42


async def test_a_failed_run_sends_run_failed(tmp_path: Path) -> None:
    receiver = Receiver([200])
    async with serve_asgi(receiver.app) as hook_url, running_server(tmp_path / "home") as server, server.client(
        server.alice
    ) as c:
        response = await c.post("/api/v1/runs", json={
            "toolId": "test.fail_n_times", "inputs": {"n": 1, "retryable": False}, "callbackUrl": f"{hook_url}/hook",
        })
        run_id = response.json()["jobRunId"]

        async def arrived() -> bool:
            return bool(receiver.received)

        await _wait_for(arrived)
    document = json.loads(receiver.received[0][1])
    assert document["type"] == "run.failed" and document["data"]["status"] == "failed"
    assert document["data"]["runId"] == run_id and document["data"]["error"]


def _notification(url: str) -> dict[str, Any]:
    return {
        "notification_id": "ntf_1", "run_id": "run_1", "account_id": "a", "channel": "callback",
        "event_type": "run.completed", "target": {"url": url}, "attempts": 0,
        "payload": {"runId": "run_1", "status": "completed", "jobId": "j", "outputs": {}, "error": None},
    }


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (410, False), (408, True), (429, True), (500, True), (502, True)]
)
async def test_the_channel_classifies_answers(status: int, retryable: bool) -> None:
    receiver = Receiver([status], headers={"Retry-After": "7"})
    async with serve_asgi(receiver.app) as url, httpx.AsyncClient() as http:
        channel = CallbackChannel(http, b"k", allow_private=True)
        with pytest.raises(DeliveryError) as caught:
            await channel.deliver(_notification(f"{url}/hook"))
    assert caught.value.retryable is retryable
    assert str(status) in str(caught.value)
    if retryable:
        assert caught.value.retry_after == 7.0


async def test_the_channel_refuses_private_addresses_unless_allowed() -> None:
    receiver = Receiver([204])
    async with serve_asgi(receiver.app) as url, httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as caught:
            await CallbackChannel(http, b"k").deliver(_notification(f"{url}/hook"))
        assert caught.value.retryable is False and "private or local" in str(caught.value)
        await CallbackChannel(http, b"k", allow_private=True).deliver(_notification(f"{url}/hook"))
        with pytest.raises(DeliveryError) as caught:
            await CallbackChannel(http, b"k").deliver(_notification("ftp://example.com/x"))
        assert caught.value.retryable is False
    assert len(receiver.received) == 1


async def test_an_unreachable_receiver_is_retryable() -> None:
    async with serve_asgi(Receiver([200]).app) as url:
        pass  # the port is closed now
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as caught:
            await CallbackChannel(http, b"k", allow_private=True, timeout=2).deliver(_notification(f"{url}/hook"))
    assert caught.value.retryable is True


def test_signatures_expire_and_name_the_timestamp() -> None:
    body = b'{"a":1}'
    header = sign(b"s", 1_000_000, body)
    assert header.startswith("t=1000000,v1=")
    assert verify(b"s", header, body, now=1_000_100)
    assert not verify(b"s", header, body, now=1_000_000 + 301)
    assert not verify(b"s", "garbage", body)


class Tarpit:
    """A hostile callback receiver on loopback: it reads the request, then sends its answer a byte
    at a time, each byte before the client's read timeout — the status line and headers
    (``where="headers"``), or a 200 with a body that never ends (``where="body"``)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.server: asyncio.AbstractServer | None = None
        self.requests = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            if self.where == "headers":
                trickle = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n")
                trickle = b"b" * 100_000_000
            for byte in trickle:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize("where", ["headers", "body"])
async def test_a_receiver_that_answers_a_byte_at_a_time_does_not_hold_the_sender(where: str) -> None:
    # the read timeout (1 s) starts again with every byte: only a deadline for the whole answer
    # frees the worker's slot (and its answer's body is never read: a 200 is a 200)
    async with Tarpit(where) as url, httpx.AsyncClient() as http:
        channel = CallbackChannel(http, b"k", allow_private=True, timeout=1.0)
        sending = asyncio.ensure_future(channel.deliver(_notification(url)))
        done, _ = await asyncio.wait({sending}, timeout=30)
        if not done:
            sending.cancel()
            pytest.fail("the callback was still being sent after 30 s")
        if where == "headers":
            with pytest.raises(DeliveryError) as caught:
                sending.result()
            assert caught.value.retryable is True and "did not answer within 1 s" in str(caught.value)
        else:
            assert sending.result() is None  # delivered: its status said so
