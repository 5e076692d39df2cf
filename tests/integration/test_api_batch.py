"""``POST /api/v1/runs/batch``: many runs of one tool in one request, a result per item."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.test_api import Server, assert_problem, running_server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "home") as srv:
        yield srv


async def test_a_batch_answers_each_item_and_a_bad_one_stops_nothing(server: Server) -> None:
    items = [{"inputs": {"value": i}, "idempotencyKey": f"row-{i}"} for i in range(25)]
    items[3] = {"inputs": {"value": "three"}}
    items[9] = {"inputs": {"value": 1, "colour": "red"}}
    async with server.client(server.alice) as c:
        response = await c.post("/api/v1/runs/batch", json={"toolId": "test.instant", "items": items})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["created"], body["existing"], body["refused"]) == (23, 0, 2)
        assert [item["index"] for item in body["items"]] == list(range(25))
        refused = {item["index"]: item["error"] for item in body["items"] if item.get("error")}
        assert set(refused) == {3, 9}
        assert refused[3]["status"] == 422 and refused[3]["errors"][0]["field"] == "items[3].inputs.value"
        assert refused[9]["errors"][0]["field"] == "items[9].inputs.colour"
        # the same keys again: the same runs, made before
        again = (await c.post("/api/v1/runs/batch", json={"toolId": "test.instant", "items": items})).json()
        assert (again["created"], again["existing"], again["refused"]) == (0, 23, 2)
        first = {i["index"]: i["jobRunId"] for i in body["items"] if i.get("jobRunId")}
        assert {i["index"]: i["jobRunId"] for i in again["items"] if i.get("jobRunId")} == first
        await server.app.wait(first[24], timeout=60)
        run = (await c.get(f"/api/v1/runs/{first[24]}")).json()
        assert run["status"] == "completed" and run["finalOutputs"]["value"] == 25
    async with server.client(server.bob) as c:  # another account: alice's keys name nothing of bob's
        mine = (await c.post("/api/v1/runs/batch", json={"toolId": "test.instant", "items": items[:2]})).json()
        assert mine["created"] == 2
        assert {i["jobRunId"] for i in mine["items"]}.isdisjoint(first.values())
        assert_problem(await c.get(f"/api/v1/runs/{first[0]}"), 404)


async def test_a_batch_is_refused_whole_when_the_request_is(server: Server) -> None:
    async with server.client(server.alice) as c:
        assert_problem(await c.post("/api/v1/runs/batch", json={"toolId": "nope", "items": [{}]}), 404)
        assert_problem(await c.post("/api/v1/runs/batch", json={"toolId": "test.instant", "items": []}), 422)
        both = {"toolId": "test.instant", "jobId": "postcard", "items": [{}]}
        assert_problem(await c.post("/api/v1/runs/batch", json=both), 422)
        too_many = {"toolId": "test.instant", "items": [{}] * 1001}
        assert_problem(await c.post("/api/v1/runs/batch", json=too_many), 422)
        assert_problem(await c.post("/api/v1/runs/batch", json={"toolId": "test.instant", "items": [{"x": 1}]}), 422)
    async with server.client() as anonymous:
        assert_problem(await anonymous.post("/api/v1/runs/batch", json={"toolId": "test.instant", "items": [{}]}), 401)


async def test_checking_a_key_records_its_use_at_most_once_a_minute(server: Server) -> None:
    from toolweave.store import accounts as accounts_q

    app = server.app
    async with server.client(server.alice) as c:
        assert (await c.get("/api/v1/runs")).status_code == 200
        first = {k["accountId"]: k["lastUsedAt"] for k in await app.list_keys()}["alice"]
        assert first is not None
        assert (await c.get("/api/v1/runs")).status_code == 200
        assert {k["accountId"]: k["lastUsedAt"] for k in await app.list_keys()}["alice"] == first
    # checking a key only reads: a minute later its use is due again, and recorded by the next check
    found = await app.store.read(accounts_q.authenticate, server.alice, first + accounts_q.KEY_USE_SECONDS + 1)
    assert found is not None and found[0] == "alice" and found[2] is True
    assert await app.store.read(accounts_q.authenticate, "tw_not_a_key", first) is None
