"""Credits, estimates and limits over HTTP: 402 and 429 problems (nothing created), the estimate
endpoint, the admin routes (grant, refund, policy, spend) and the batch endpoint's holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from tests.integration.test_api import ADMIN_KEY, JOBS, Server, assert_problem, running_server

PRICED = {
    "toolId": "test.instant", "service": "builtin", "version": "2", "displayName": "Test: instant (priced)",
    "inputSchema": {"value": {"type": "integer", "default": 0}},
    "outputSchema": {"value": {"type": "integer"}, "note": {"type": "text"}},
    "costingModel": {"rateSource": "static", "staticCost": {"amount": "1.25"}},
}
PAIR = {
    "jobId": "pair", "inputSchema": {"value": {"type": "integer", "default": 1}},
    "outputSchema": {"first": {"type": "integer", "sourceStepId": "a", "sourceOutputName": "value"},
                     "second": {"type": "integer", "sourceStepId": "b", "sourceOutputName": "value"}},
    "steps": [{"stepId": "a", "toolId": "test.instant", "inputMappings": [{"sourceJobInput": "value", "targetInputName": "value"}]},
              {"stepId": "b", "toolId": "test.instant", "inputMappings": [
                  {"sourceStepId": "a", "sourceOutputName": "value", "targetInputName": "value"}]}],
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    defs = tmp_path / "defs"
    defs.mkdir()
    (defs / "priced.yaml").write_text(yaml.safe_dump(PRICED))
    (defs / "pair.yaml").write_text(yaml.safe_dump(PAIR))
    async with running_server(tmp_path / "home", definitions=[JOBS, defs]) as srv:
        yield srv


async def test_only_the_admin_key_grants_and_a_grant_shows_in_the_balance(server: Server) -> None:
    async with server.client(server.bob) as bob:
        assert_problem(await bob.post("/api/v1/accounts/bob/credits", json={"amount": "100"}), 403)
        assert_problem(await bob.get("/api/v1/credits", params={"account": "alice"}), 403)
    async with server.client(ADMIN_KEY) as admin:
        granted = await admin.post("/api/v1/accounts/alice/credits", json={"amount": "2.5", "note": "trial"})
        assert granted.status_code == 201, granted.text
        assert granted.json()["available"] == "2.50" and granted.json()["credits"] is True
        for bad in ({"amount": "-1"}, {"amount": "abc"}, {"amount": "0.000000001"}, {}):
            assert_problem(await admin.post("/api/v1/accounts/alice/credits", json=bad), 422)
    async with server.client(server.alice) as alice:
        shown = (await alice.get("/api/v1/credits")).json()
        assert (shown["balance"], shown["held"], shown["available"]) == ("2.50", "0.00", "2.50")
        history = (await alice.get("/api/v1/credits/history")).json()
        assert [e["kind"] for e in history["items"]] == ["grant"] and history["items"][0]["note"] == "trial"


async def test_a_submit_the_balance_cannot_cover_is_402_and_creates_nothing(server: Server) -> None:
    async with server.client(ADMIN_KEY) as admin:
        await admin.post("/api/v1/accounts/alice/credits", json={"amount": "2.5"})
    async with server.client(server.alice) as alice:
        estimate = await alice.post("/api/v1/estimates", json={"toolId": "test.instant", "inputs": {"value": 1}})
        assert estimate.status_code == 200, estimate.text
        body = estimate.json()
        assert (body["total"], body["known"], body["available"], body["covered"]) == ("1.25", True, "2.50", True)
        assert body["steps"][0]["basis"] == "static cost"
        for _ in range(2):
            assert (await alice.post("/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": 1}})).status_code == 201
        refused = assert_problem(await alice.post("/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": 1}}), 402)
        assert refused["type"].endswith("insufficient-credits")
        assert refused["needed"] == "1.25" and refused["available"] == "0"
        assert "estimated at 1.25 credits" in refused["detail"]
        runs = (await alice.get("/api/v1/runs")).json()["items"]
        assert len(runs) == 2
        assert (await alice.post("/api/v1/estimates", json={"toolId": "test.instant"})).json()["covered"] is False


async def test_the_batch_endpoint_holds_per_item(server: Server) -> None:
    async with server.client(ADMIN_KEY) as admin:
        await admin.post("/api/v1/accounts/bob/credits", json={"amount": "2.5"})
    async with server.client(server.bob) as bob:
        result = (await bob.post("/api/v1/runs/batch", json={
            "toolId": "test.instant", "items": [{"inputs": {"value": v}} for v in range(3)]})).json()
        assert (result["created"], result["refused"]) == (2, 1)
        assert result["items"][2]["error"]["status"] == 402


async def test_over_a_limit_is_429_with_retry_after(server: Server) -> None:
    async with server.client(ADMIN_KEY) as admin:
        policy = await admin.patch("/api/v1/accounts/alice/policy", json={"submitsPerMinute": 1})
        assert policy.status_code == 200, policy.text
        assert policy.json()["limits"]["submitsPerMinute"] == 1
        assert_problem(await admin.patch("/api/v1/accounts/alice/policy", json={}), 422)
        assert_problem(await admin.patch("/api/v1/accounts/alice/policy", json={"maxRunsInFlight": -1}), 422)
    async with server.client(server.alice) as alice:
        assert (await alice.post("/api/v1/runs", json={"toolId": "test.instant"})).status_code == 201
        response = await alice.post("/api/v1/runs", json={"toolId": "test.instant"})
        body = assert_problem(response, 429)
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        assert body["limit"] == "submits_per_minute" and body["allowed"] == 1
        assert len((await alice.get("/api/v1/runs")).json()["items"]) == 1
    async with server.client(server.bob) as bob:  # another account is not limited by alice's
        assert (await bob.post("/api/v1/runs", json={"toolId": "test.instant"})).status_code == 201


async def test_a_cost_ceiling_stops_a_run_short_with_the_reason(server: Server) -> None:
    async with server.client(server.alice) as alice:
        made = await alice.post("/api/v1/runs", json={"jobId": "pair", "costCeiling": "2"})
        assert made.status_code == 201, made.text
        run_id = made.json()["jobRunId"]
        assert_problem(await alice.post("/api/v1/runs", json={"jobId": "pair", "costCeiling": "-2"}), 422)
        run = await server.app.wait(run_id, timeout=30)
    assert run["status"] == "partially_completed"
    assert run["finalOutputs"] == {"first": 2}
    assert run["error"]["code"] == "cost_ceiling" and "cost ceiling 2" in run["error"]["message"]
    assert {s["stepId"]: s["status"] for s in run["stepStatuses"]} == {"a": "succeeded", "b": "skipped"}


async def test_spend_per_account_tool_and_day(server: Server) -> None:
    async with server.client(ADMIN_KEY) as admin:
        await admin.post("/api/v1/accounts/alice/credits", json={"amount": "10"})
    async with server.client(server.alice) as alice:
        run_id = (await alice.post("/api/v1/runs", json={"jobId": "pair"})).json()["jobRunId"]
        await server.app.wait(run_id, timeout=30)
        mine = (await alice.get("/api/v1/credits/spend")).json()
        assert mine["total"] == "2.50" and mine["byTool"] == {"test.instant": "2.50"}
        assert_problem(await alice.get("/api/v1/credits/spend", params={"account": "bob"}), 403)
    async with server.client(ADMIN_KEY) as admin:
        everyone = (await admin.get("/api/v1/credits/spend", params={"days": 1})).json()
        assert everyone["byAccount"] == {"alice": "2.50"}
        refunded = await admin.post("/api/v1/accounts/alice/refunds", json={"amount": "1.25", "runId": run_id})
        assert refunded.status_code == 201 and refunded.json()["balance"] == "8.75"


async def test_the_openapi_document_has_the_credit_routes(server: Server) -> None:
    async with server.client() as anyone:
        spec = (await anyone.get("/api/v1/openapi.json")).json()
    for path in ("/api/v1/estimates", "/api/v1/credits", "/api/v1/credits/history", "/api/v1/credits/spend",
                 "/api/v1/accounts/{account}/credits", "/api/v1/accounts/{account}/policy"):
        assert path in spec["paths"], path
    assert "402" in spec["paths"]["/api/v1/runs"]["post"]["responses"]
    assert "429" in spec["paths"]["/api/v1/runs"]["post"]["responses"]


async def test_the_web_form_shows_the_estimate_and_a_refusal(server: Server) -> None:
    from tests.helpers.accounts import web_login

    async with server.client(ADMIN_KEY) as admin:
        await admin.post("/api/v1/accounts/alice/credits", json={"amount": "1"})
    async with server.client(follow_redirects=False) as browser:
        await web_login(browser, server.alice)
        page = (await browser.get("/new/pair")).text
        assert 'id="estimate"' in page and '<strong id="estimate-total">2.50</strong>' in page
        assert "1.00 available: not enough for this run" in page
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        # what the page's script sends as the inputs change: the session's CSRF token in a header
        refreshed = await browser.post("/api/v1/estimates", json={"jobId": "pair", "inputs": {"value": 2}},
                                       headers={"X-CSRF-Token": csrf})
        assert refreshed.status_code == 200 and refreshed.json()["total"] == "2.50"
        refused = await browser.post("/new/pair", data={"csrf": csrf, "value": "1"})
        assert refused.status_code == 402
        assert "estimated at 2.50 credits" in refused.text
        bad = await browser.post("/new/pair", data={"csrf": csrf, "value": "1", "costCeiling": "lots"})
        assert bad.status_code == 422 and "costCeiling" in bad.text
        capped = await browser.post("/new/pair", data={"csrf": csrf, "value": "1", "costCeiling": "1"})
        assert capped.status_code == 303, capped.text  # holds only the ceiling, which 1.00 covers


async def test_a_grant_past_the_largest_balance_is_422(server: Server) -> None:
    async with server.client(ADMIN_KEY) as admin:
        for _ in range(10):
            assert (await admin.post("/api/v1/accounts/bob/credits", json={"amount": "1000000000"})).status_code == 201
        body = assert_problem(await admin.post("/api/v1/accounts/bob/refunds", json={"amount": "1"}), 422)
        assert body["errors"][0]["field"] == "amount" and "at most" in body["detail"]
