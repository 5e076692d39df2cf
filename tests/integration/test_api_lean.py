"""The lean path (``api.lean``) for webhooks and JSON submits answers exactly as the FastAPI routes
do, and webhooks arriving together — repeated, out of order, some of them bad — are applied once
each without failing their neighbours. Real uvicorn servers on loopback, on both stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.helpers.loopback import serve_asgi
from tests.integration.test_api import ADMIN_KEY, JOBS
from tests.integration.test_api_test_backend_webhooks import parked

from toolweave.api import create_app
from toolweave.app import App
from toolweave.settings import Settings


@contextlib.asynccontextmanager
async def two_servers(home: Path, database_url: str | None = None) -> AsyncIterator[tuple[App, str, str, str, str]]:
    """One App served twice, with no worker: with the lean path and without it. Yields (app, lean
    URL, routes URL, alice's key, bob's key)."""
    app = App(Settings(home=home, definitions=[JOBS], test_tools=True, admin_key=ADMIN_KEY, database_url=database_url,
                       request_max_json_bytes=20_000))
    try:
        _, alice = await app.create_key("alice", "tests")
        _, bob = await app.create_key("bob", "tests")
        lean, routes = create_app(app, run_worker=False), create_app(app, run_worker=False, lean=False)
        async with serve_asgi(lean) as lean_url, serve_asgi(routes) as routes_url:
            yield app, lean_url, routes_url, alice, bob
    finally:
        await app.aclose()


def answer(response: httpx.Response) -> tuple[int, str, Any, dict[str, str]]:
    """What a client sees of an answer: status, content type, JSON body, the headers that matter."""
    wanted = ("location", "www-authenticate", "x-content-type-options", "x-frame-options", "referrer-policy")
    return (response.status_code, response.headers.get("content-type", ""), response.json(),
            {k: v for k, v in response.headers.items() if k in wanted})


async def both(lean_url: str, routes_url: str, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        one = await client.request(method, lean_url + path, **kwargs)
        two = await client.request(method, routes_url + path, **kwargs)
    return answer(one), answer(two)


async def test_refusals_are_the_routes_refusals(tmp_path: Path) -> None:
    async with two_servers(tmp_path / "home") as (app, lean, routes, alice, _bob):
        run_id = await app.submit("test.slow_async", {"seconds": 86400}, account_id="alice")
        gens = (await app.get_run(run_id, "alice"))["generations"]
        gen_id = gens[0]["generationId"] if gens else "gen_unknown"
        token = app.engine.webhook_token("builtin", gen_id)
        key = {"Authorization": f"Bearer {alice}", "Content-Type": "application/json"}
        cases: list[tuple[str, str, dict[str, Any]]] = [
            # webhooks: a forged token, an unknown generation with its own good token, garbage, too large
            ("POST", f"/webhooks/builtin/{gen_id}?token={'0' * 32}", {"content": b"{}"}),
            ("POST", f"/webhooks/builtin/gen_nothere?token={app.engine.webhook_token('builtin', 'gen_nothere')}",
             {"content": b'{"runId": "x", "status": "processing"}'}),
            ("POST", f"/webhooks/builtin/gen_nothere?token={app.engine.webhook_token('builtin', 'gen_nothere')}",
             {"content": b"not json"}),
            ("POST", f"/webhooks/nosuchservice/{gen_id}?token={token}", {"content": b"{}"}),
            ("POST", f"/webhooks/builtin/{gen_id}?token={token}", {"content": b"x" * 30_000}),
            # what the lean path leaves to the routes: the same answers either way
            ("POST", f"/webhooks/builtin/{gen_id}?token={token}&token={token}", {"content": b"{}"}),
            ("POST", f"/webhooks/builtin/{gen_id}?token=a%2Fb", {"content": b"{}"}),
            ("POST", f"/webhooks/builtin/{'g' * 65}?token={token}", {"content": b"{}"}),
            ("POST", f"/webhooks/bad%20name/{gen_id}?token={token}", {"content": b"{}"}),
            ("POST", f"/webhooks/builtin/{gen_id}", {"content": b"{}"}),
            # submits: no key, a wrong key, a session-less form, bad JSON, bad fields, unknown tool, bad inputs
            ("POST", "/api/v1/runs", {"json": {"toolId": "test.instant"}}),
            ("POST", "/api/v1/runs", {"json": {"toolId": "test.instant"}, "headers": {"Authorization": "Bearer tw_nope"}}),
            ("POST", "/api/v1/runs", {"json": {"toolId": "test.instant"}, "headers": {"Authorization": "Basic abc"}}),
            ("POST", "/api/v1/runs", {"content": b"{nope", "headers": key}),
            ("POST", "/api/v1/runs", {"content": b"[1, 2]", "headers": key}),
            ("POST", "/api/v1/runs", {"content": json.dumps({"toolId": "test.instant", "priority": "high"}), "headers": key}),
            ("POST", "/api/v1/runs", {"content": json.dumps({"toolId": "a", "jobId": "b"}), "headers": key}),
            ("POST", "/api/v1/runs", {"content": json.dumps({"toolId": "no.such.tool"}), "headers": key}),
            ("POST", "/api/v1/runs", {"content": '{"toolId": "test.instant", "inputs": {"value": ' + "[" * 40 + "]" * 40
             + "}}", "headers": key}),
            ("POST", "/api/v1/runs", {"content": json.dumps({"toolId": "test.instant", "inputs": {"nope": 1}}), "headers": key}),
            ("POST", "/api/v1/runs", {"content": b"x" * 30_000, "headers": key}),
            ("POST", "/api/v1/runs", {"content": b"{}", "headers": {**key, "Idempotency-Key": "k" * 201}}),
            ("POST", "/api/v1/runs", {"content": b"{}", "headers": {**key, "Content-Type": "text/plain"}}),
        ]
        for method, path, kwargs in cases:
            lean_answer, route_answer = await both(lean, routes, method, path, **kwargs)
            assert lean_answer[0] >= 400, (path, lean_answer)
            assert lean_answer[1].startswith("application/problem+json"), (path, lean_answer)
            assert lean_answer == route_answer, (path, kwargs)


async def test_a_submit_is_answered_as_the_route_answers_and_shown_as_get_shows_it(tmp_path: Path) -> None:
    async with two_servers(tmp_path / "home") as (_app, lean, routes, alice, bob):
        headers = {"Authorization": f"Bearer {alice}", "Idempotency-Key": "once"}
        async with httpx.AsyncClient(timeout=30) as client:
            made = await client.post(f"{lean}/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": 3}},
                                     headers=headers)
            assert made.status_code == 201, made.text
            run_id = made.json()["jobRunId"]
            assert made.headers["location"] == f"/api/v1/runs/{run_id}"
            again_lean = await client.post(f"{lean}/api/v1/runs", json={"toolId": "test.instant"}, headers=headers)
            again_routes = await client.post(f"{routes}/api/v1/runs", json={"toolId": "test.instant"}, headers=headers)
            shown = await client.get(f"{routes}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {alice}"})
            hidden = await client.get(f"{lean}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {bob}"})
        assert made.json() == shown.json()  # the route's response model, field for field
        assert answer(again_lean) == answer(again_routes)  # the key's run, 200, on both paths
        assert again_lean.status_code == 200 and again_lean.json() == shown.json()
        assert hidden.status_code == 404  # another account's run


async def test_a_key_revoked_by_another_process_is_refused_at_once_as_the_routes_refuse_it(
    db_url: str, tmp_path: Path,
) -> None:
    """The lean path remembers the keys it has seen work (``App.remembered_key``); a key revoked
    since by another process is refused at once all the same, with the route's answer (401 before
    the body is looked at), and nothing is stored for it."""
    async with two_servers(tmp_path / "home", db_url) as (app, lean, routes, alice, bob):
        headers = {"Authorization": f"Bearer {alice}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=30) as client:
            for number in range(2):  # the second is answered with the key remembered
                made = await client.post(f"{lean}/api/v1/runs", json={"toolId": "test.instant", "inputs": {"value": number}},
                                         headers={**headers, "Idempotency-Key": f"k{number}"})
                assert made.status_code == 201, made.text
        remembered = dict(app._keys_seen)
        key_id = next(iter(remembered.values()))[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
        env.update(TOOLWEAVE_HOME=str(tmp_path / "home"), TOOLWEAVE_DATABASE_URL=db_url)
        revoked = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "toolweave.cli", "keys", "revoke", alice[:10]], env=env,
            capture_output=True, text=True, timeout=120,
        )
        assert revoked.returncode == 0, revoked.stderr
        count = "SELECT COUNT(*) AS n FROM runs"
        before = await app.store.read(lambda tx: tx.one(count).n)
        cases: list[dict[str, Any]] = [  # each while the lean path still remembers the key
            {"content": b"{nope"},
            {"content": json.dumps({"toolId": "no.such.tool"})},
            {"content": json.dumps({"toolId": "test.instant", "inputs": {"nope": 1}})},
            {"content": json.dumps({"toolId": "test.instant", "inputs": {"value": 5}}), "idem": "k0"},  # its run
            {"content": json.dumps({"toolId": "test.instant", "inputs": {"value": 5}})},
        ]
        for case in cases:
            app._keys_seen = dict(remembered)  # as remembered before the revocation (each answer forgets it)
            assert await app.remembered_key(alice) == ("alice", key_id, True)
            extra = {"Idempotency-Key": case["idem"]} if "idem" in case else {}
            lean_answer, route_answer = await both(lean, routes, "POST", "/api/v1/runs", content=case["content"],
                                                   headers={**headers, **extra})
            assert lean_answer[0] == 401, (case, lean_answer)
            assert lean_answer == route_answer, case
        assert await app.store.read(lambda tx: tx.one(count).n) == before
        async with httpx.AsyncClient(timeout=30) as client:  # the other account's key still works
            made = await client.post(f"{lean}/api/v1/runs", json={"toolId": "test.instant"},
                                     headers={"Authorization": f"Bearer {bob}"})
        assert made.status_code == 201, made.text


async def test_a_remembered_key_revoked_between_its_look_up_and_the_transaction_stores_nothing(
    db_url: str, tmp_path: Path,
) -> None:
    """The transaction that stores the run checks the remembered key (``KeyRevoked``): a key
    revoked while the request was being admitted stores nothing."""
    from toolweave.submitting import KeyRevoked

    async with two_servers(tmp_path / "home", db_url) as (app, _lean, _routes, alice, _bob):
        account, key_id, remembered = await app.remembered_key(alice) or ("", "", True)
        assert (account, remembered) == ("alice", False)
        assert await app.remembered_key(alice) == ("alice", key_id, True)
        other = App(Settings(home=tmp_path / "home", database_url=db_url))  # another process's view of the store
        try:
            assert await other.revoke_key(key_id) == 1
        finally:
            await other.aclose()
        assert await app.remembered_key(alice) == ("alice", key_id, True)  # this process has not heard
        with pytest.raises(KeyRevoked):
            await app.submit_shown("test.instant", {"value": 1}, key_id=key_id, account_id="alice")
        assert await app.store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs").n) == 0
        shown, created = await app.submit_shown("test.instant", {"value": 1}, account_id="alice")  # no key to check
        assert created and shown["status"] == "queued" and shown["statusDetail"].startswith("no worker is running")


@pytest.fixture
async def server_app(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[App, str]]:
    async with two_servers(tmp_path / "home", db_url) as (app, lean, _routes, _alice, _bob):
        yield app, lean


async def _parked_with_worker(app: App, count: int) -> list[tuple[str, str, str]]:
    """(run id, generation id, platform run id) of ``count`` runs of test.slow_async, parked."""
    run_ids = [await app.submit("test.slow_async", {"seconds": 86400}, account_id="alice") for _ in range(count)]
    worker = app.make_worker(4, sweep_seconds=0)
    task = asyncio.create_task(worker.run())
    try:
        found = [await asyncio.wait_for(parked(app, r), 30) for r in run_ids]
    finally:
        worker.stop()
        await task
    return [(r, g, p) for r, (g, p) in zip(run_ids, found, strict=True)]


async def test_a_burst_for_one_generation_repeated_and_out_of_order_counts_each_change_once(
    server_app: tuple[App, str],
) -> None:
    app, url = server_app
    ((run_id, gen_id, platform_id),) = await _parked_with_worker(app, 1)
    path = f"{url}/webhooks/builtin/{gen_id}?token={app.engine.webhook_token('builtin', gen_id)}"
    bodies = [
        json.dumps({"runId": platform_id, "status": "processing", "progress": step / 20, "eventId": f"p{step}"})
        for step in range(1, 20)
    ]
    done = json.dumps({"runId": platform_id, "status": "completed", "outputs": {"waited": 7}, "eventId": "done"})
    sent = [*bodies, *bodies, done, done]  # each one twice
    random.Random(15).shuffle(sent)
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(*(client.post(path, content=body) for body in sent))
    assert [a.status_code for a in answers] == [200] * len(sent)
    applied = sum(a.json()["applied"] for a in answers)
    run = await app.get_run(run_id, "alice")
    events = await app.events(run_id, "alice")
    progress = [e["data"]["progress"] for e in events if e["type"] == "step.progress"]
    assert progress == sorted(set(progress)), progress  # only forward, none twice
    assert [e["type"] for e in events].count("run.completed") == 1
    assert applied == len(progress) + 1  # every change answered applied once; repeats and late ones not
    assert run["status"] == "completed" and run["finalOutputs"] == {"waited": 7}
    assert [g["status"] for g in run["generations"]] == ["completed"]
    assert app.store.careful_reruns == 0  # the queued progress writes were all as predicted


async def test_bad_webhooks_in_a_group_commit_fail_alone(server_app: tuple[App, str]) -> None:
    app, url = server_app
    runs = await _parked_with_worker(app, 6)
    token = app.engine.webhook_token

    def webhook(gen_id: str, body: dict[str, Any] | bytes) -> tuple[str, bytes]:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return f"{url}/webhooks/builtin/{gen_id}?token={token('builtin', gen_id)}", content

    good = [webhook(g, {"runId": p, "status": "processing", "progress": 0.5, "eventId": f"ok-{g}"}) for _, g, p in runs]
    bad = [
        webhook(runs[0][1], {"runId": "someone-else~1", "status": "processing", "progress": 0.6}),  # another run
        webhook("gen_pruned", {"runId": "x", "status": "processing", "progress": 0.5}),  # no such generation
        webhook(runs[1][1], b"\xff not json"),
        webhook(runs[2][1], {"runId": runs[2][2], "status": "exploded"}),
    ]
    sent = [*good[:3], *bad, *good[3:]]
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(*(client.post(path, content=body) for path, body in sent))
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 200, 200, 400, 404, 400, 400, 200, 200, 200], [a.text for a in answers]
    assert all(a.json() == {"applied": True} for a in answers if a.status_code == 200)
    for run_id, _gen, _platform in runs:
        run = await app.get_run(run_id, "alice")
        assert run["stepStatuses"][0]["progress"] == 0.5


async def test_a_webhook_found_wrong_in_the_transaction_does_not_spoil_it(server_app: tuple[App, str]) -> None:
    """Called together (one turn of the loop: one group commit), the webhooks of an unknown
    generation and of another platform run get their errors while the transaction commits the
    others: one transaction, none run again alone."""
    app, _url = server_app
    runs = await _parked_with_worker(app, 4)

    async def send(gen_id: str, body: dict[str, Any]) -> bool:
        return await app.handle_webhook("builtin", gen_id, app.engine.webhook_token("builtin", gen_id), {},
                                        json.dumps(body).encode())

    before = app.webhook_transactions
    results = await asyncio.gather(
        send(runs[0][1], {"runId": runs[0][2], "status": "processing", "progress": 0.25}),
        send("gen_pruned", {"runId": "x", "status": "processing", "progress": 0.5}),
        send(runs[1][1], {"runId": runs[1][2], "status": "completed", "outputs": {"waited": 1}}),
        send(runs[2][1], {"runId": "someone-else~1", "status": "completed", "outputs": {"waited": 2}}),
        send(runs[3][1], {"runId": runs[3][2], "status": "processing", "progress": 0.75}),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == ["bool", "NotFound", "bool", "WebhookRejected", "bool"]
    assert [r for r in results if isinstance(r, bool)] == [True, True, True]
    assert app.webhook_transactions - before == 1
    assert (await app.get_run(runs[1][0], "alice"))["status"] == "completed"
    assert (await app.get_run(runs[2][0], "alice"))["status"] != "completed"


FAN_IN = """
jobId: two_waits
inputSchema:
  note: {type: text, default: ""}
outputSchema:
  joined: {type: text, sourceStepId: join, sourceOutputName: text}
steps:
  - stepId: left
    toolId: test.slow_async
    inputMappings:
      - {value: 86400, targetInputName: seconds}
      - {value: "l", targetInputName: note}
  - stepId: right
    toolId: test.slow_async
    inputMappings:
      - {value: 86400, targetInputName: seconds}
      - {value: "r", targetInputName: note}
  - stepId: join
    toolId: text.concat
    inputMappings:
      - {sourceStepId: left, sourceOutputName: note, targetInputName: text}
      - {sourceStepId: right, sourceOutputName: note, targetInputName: append}
      - {value: "+", targetInputName: separator}
"""


async def test_both_branches_ended_by_webhooks_of_one_transaction_start_the_join_once(
    db_url: str, tmp_path: Path,
) -> None:
    """Two generations of one run ended by webhooks of the same group commit: the run is locked
    once, the planner passes over both ends together and the step after them starts once."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "two_waits.yaml").write_text(FAN_IN)
    app = App(Settings(home=tmp_path / "home", definitions=[tmp_path / "defs"], test_tools=True, database_url=db_url))
    try:
        run_id = await app.submit("two_waits", {}, account_id="alice")
        worker = app.make_worker(4, sweep_seconds=0)
        task = asyncio.create_task(worker.run())
        try:
            while len(gens := [g for g in (await app.get_run(run_id, "alice"))["generations"]
                               if g["platformSpecificRunId"]]) < 2:
                await asyncio.sleep(0.05)
            before = app.webhook_transactions
            results = await asyncio.gather(*(
                app.handle_webhook("builtin", g["generationId"], app.engine.webhook_token("builtin", g["generationId"]),
                                   {}, json.dumps({"runId": g["platformSpecificRunId"], "status": "completed",
                                                   "outputs": {"note": g["stepId"], "waited": 1}}).encode())
                for g in gens
            ))
            assert results == [True, True]
            assert app.webhook_transactions - before == 1
            run = await app.wait(run_id, timeout=60)
        finally:
            worker.stop()
            await task
        assert run["status"] == "completed", run
        assert run["finalOutputs"] == {"joined": "left+right"}
        assert [g["stepId"] for g in run["generations"]].count("join") == 1
    finally:
        await app.aclose()


async def test_submits_answered_together_are_each_shown_as_get_shows_them(db_url: str, tmp_path: Path) -> None:
    """Concurrent submits (one group commit) are answered with their runs read back together
    (``run_views.run_details``): each answer is what ``GET /api/v1/runs/{id}`` shows, generations
    started by the first plan (two at the same moment) in the same order."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "two_waits.yaml").write_text(FAN_IN)
    app = App(Settings(home=tmp_path / "home", definitions=[tmp_path / "defs"], test_tools=True, database_url=db_url))
    try:
        _, alice = await app.create_key("alice", "tests")
        _, bob = await app.create_key("bob", "tests")
        async with serve_asgi(create_app(app, run_worker=False)) as url, httpx.AsyncClient(timeout=60) as client:
            sent = [(alice if i % 3 else bob, {"jobId": "two_waits"} if i % 2 else {"toolId": "test.instant", "inputs": {"value": i}})
                    for i in range(24)]
            sent += [(alice, {"toolId": "test.instant"})] * 2  # the same idempotency key twice in one batch
            keys = [None] * 24 + ["twice", "twice"]
            answers = await asyncio.gather(*(
                client.post(f"{url}/api/v1/runs", json=body,
                            headers={"Authorization": f"Bearer {key}", **({"Idempotency-Key": k} if k else {})})
                for (key, body), k in zip(sent, keys, strict=True)
            ))
            assert sorted(a.status_code for a in answers[-2:]) == [200, 201]
            assert answers[-1].json()["jobRunId"] == answers[-2].json()["jobRunId"]
            for (key, _body), made in zip(sent, answers, strict=True):
                assert made.status_code in (200, 201), made.text
                shown = await client.get(f"{url}/api/v1/runs/{made.json()['jobRunId']}",
                                         headers={"Authorization": f"Bearer {key}"})
                assert made.json() == shown.json()
        two = [a.json() for a in answers[1:24:2]]
        assert all(len(run["generations"]) == 2 for run in two), two[0]
    finally:
        await app.aclose()
