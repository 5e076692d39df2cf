"""What front ends see of runs: a run's summary and detail (camelCase names, ISO times) and its
events, read in one transaction and scoped to an account; the cursors of run listings."""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from toolweave.engine.replay import BadRequest
from toolweave.engine.work import NotFound
from toolweave.store import events as events_q
from toolweave.store import generations as gens_q
from toolweave.store import items as items_q
from toolweave.store import notifications as notes_q
from toolweave.store import questions as questions_q
from toolweave.store import runs as runs_q
from toolweave.store.db import Tx


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration_ms(started_at: float | None, finished_at: float | None) -> int | None:
    """Milliseconds from start to end, once both are known."""
    return int((finished_at - started_at) * 1000) if finished_at and started_at else None


def run_summary(r: Any) -> dict[str, Any]:
    return {
        "jobRunId": r["run_id"],
        "jobDefinitionId": r["job_definition_id"],
        "version": r["definition_version"],
        "masterAccountId": r["master_account_id"],
        "status": r["status"],
        "costUsd": str(r["cost_usd"]),
        "createdAt": iso(r["created_at"]),
        "startedAt": iso(r["started_at"]),
        "finishedAt": iso(r["finished_at"]),
        "durationMs": duration_ms(r["started_at"], r["finished_at"]),
        "error": r["error"],
        "parentRunId": r["parent_run_id"],
        "forkedFromRunId": r["forked_from_run_id"],
        "forkedFromStep": r["forked_from_step"],
    }


def run_detail(tx: Tx, run_id: str, account_id: str | None) -> dict[str, Any]:
    run = runs_q.get(tx, run_id)
    if run is None or (account_id is not None and run.master_account_id != account_id):
        raise NotFound(run_id)
    return _detail(tx, run, gens_q.for_run(tx, run_id), runs_q.steps(tx, run_id), notes_q.for_run(tx, run_id))


def run_details(tx: Tx, wanted: Sequence[tuple[str, str | None]]) -> list[dict[str, Any] | NotFound]:
    """``run_detail`` of each (run id, account id) of ``wanted``, with each table read once for
    all of them (500 runs a statement) (a group commit's submits answered); ``NotFound`` in place of a
    run that is not there or not the account's."""
    ids = sorted({run_id for run_id, _ in wanted})
    runs: dict[str, Any] = {}
    gens: dict[str, list[Any]] = {}
    steps: dict[str, list[Any]] = {}
    notes: dict[str, list[Any]] = {}
    for first in range(0, len(ids), 500):  # bounded IN lists
        part = ids[first:first + 500]
        runs.update((row["run_id"], row) for row in runs_q.get_many(tx, part))
        gens.update(_by_run(gens_q.for_runs(tx, part)))
        steps.update(_by_run(runs_q.steps_of_runs(tx, part)))
        notes.update(_by_run(notes_q.for_runs(tx, part)))
    found: list[dict[str, Any] | NotFound] = []
    for run_id, account_id in wanted:
        run = runs.get(run_id)
        if run is None or (account_id is not None and run["master_account_id"] != account_id):
            found.append(NotFound(run_id))
            continue
        found.append(_detail(tx, run, gens.get(run_id, []), steps.get(run_id, []), notes.get(run_id, [])))
    return found


def _by_run(rows: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row["run_id"], []).append(row)
    return grouped


def _detail(tx: Tx, run: Any, gens: list[Any], step_rows: list[Any], notifications: list[Any]) -> dict[str, Any]:
    """A run's detail from its rows (``run_detail``); what only some runs need is read here."""
    run_id = run["run_id"]
    detail = run_summary(run)
    detail.update(
        {
            "sessionId": run["session_id"],
            "initiatingEventId": run["initiating_event_id"],
            "origin": run["origin"],
            "jobInputs": run["job_inputs"],
            "finalOutputs": run["final_outputs"],
            "cancelRequested": run["cancel_requested"],
            "callbackUrl": run["callback_url"],
        }
    )
    linked = {run["forked_from_run_id"]} | {s["reused_from_run_id"] for s in step_rows}
    pruned = {other for other in linked - {None} if runs_q.get(tx, other) is None}
    """Runs this one links to that retention has removed since (``toolweave prune``): shown as such, not linked."""
    detail["forkedFromPruned"] = run["forked_from_run_id"] in pruned if run["forked_from_run_id"] else None
    in_flight = items_q.running_counts(tx, run_id) if any(s["items_total"] is not None for s in step_rows) else {}
    asked = {q.question_id: q for q in questions_q.of_run(tx, run_id)} if any(s["question_id"] for s in step_rows) else {}
    detail["stepStatuses"] = [
        {
            "stepId": s["step_id"],
            "status": s["status"],
            "attempt": s["attempt"],
            "toolId": s["tool_id"],
            "usingFallback": s["using_fallback"],
            "generationId": s["generation_id"],
            "generationIds": s["generation_ids"],
            "childRunId": s["child_run_id"],
            "outputs": s["outputs"],
            "reason": s["reason"],
            "error": s["error"],
            "progress": s["progress"],
            "nextAttemptAt": iso(s["next_attempt_at"]),
            "startedAt": iso(s["started_at"]),
            "finishedAt": iso(s["finished_at"]),
            "durationMs": duration_ms(s["started_at"], s["finished_at"]),
            "reusedFromRunId": s["reused_from_run_id"],
            "reusedFromPruned": s["reused_from_run_id"] in pruned if s["reused_from_run_id"] else None,
            "items": item_counts(s, in_flight.get(s["step_id"], {})),
            "question": question_view(asked[s["question_id"]]) if s["question_id"] in asked else None,
        }
        for s in step_rows
    ]
    detail["waitingFor"] = [
        step["question"] for step in detail["stepStatuses"]
        if step["status"] == "waiting_input" and step["question"] is not None
    ]
    if run["status"] == "waiting_input":
        # questions of its nested runs that wait — a nested job's, a map item's, and theirs in turn
        # (each answered with its own run's id)
        detail["waitingFor"] += [question_view(q) for q in questions_q.waiting_under(tx, run_id)]
    detail["generations"] = [
        {
            "generationId": g["generation_id"],
            "stepId": g["step_id"],
            "attempt": g["attempt"],
            "serviceName": g["service_name"],
            "toolId": g["tool_id"],
            "platformSpecificRunId": g["platform_specific_run_id"],
            "status": g["status"],
            "progress": g["progress"],
            "liveStatus": g["live_status"],
            "requestTimestamp": iso(g["request_timestamp"]),
            "responseTimestamp": iso(g["response_timestamp"]),
            "durationMs": g["duration_ms"],
            "costUsd": str(g["cost_usd"]) if g["cost_usd"] is not None else None,
            "error": g["error"],
            "outputs": g["outputs"],
            "itemIndex": g["item_index"],
            "cacheHit": g["cached_from"] is not None,
            "cachedFrom": g["cached_from"],
        }
        for g in gens
    ]
    detail["notifications"] = [
        {
            "notificationId": n["notification_id"],
            "channel": n["channel"],
            "eventType": n["event_type"],
            "status": n["status"],
            "attempts": n["attempts"],
            "lastError": n["last_error"],
            "deliveredAt": iso(n["delivered_at"]),
        }
        for n in notifications
    ]
    return detail


def question_view(q: Any) -> dict[str, Any]:
    """What an ask step asked and how it was answered (``engine.asking``), as front ends see it."""
    body = dict(q.body or {})
    return {
        "questionId": q.question_id,
        "runId": q.run_id,
        "stepId": q.step_id,
        "attempt": q.attempt,
        "kind": q.kind,
        "text": body.get("text"),
        "status": q.status,
        "candidates": body.get("candidates"),
        "minChoices": body.get("minChoices"),
        "maxChoices": body.get("maxChoices"),
        "fields": body.get("fields"),
        "values": body.get("values"),
        "shown": body.get("shown"),
        "onTimeout": body.get("onTimeout"),
        "onReject": body.get("onReject"),
        "accountId": q.account_id,
        "approvers": list(q.approvers or []),
        "askedAt": iso(q.asked_at),
        "expiresAt": iso(q.expires_at),
        "answer": q.answer,
        "answeredBy": q.answered_by,
        "answeredAt": iso(q.answered_at),
    }


def item_counts(step: Any, in_flight: dict[str, int]) -> dict[str, int] | None:
    """A map step's items by status (None for other steps, and before its list is known)."""
    if step["items_total"] is None:
        return None
    total, succeeded, failed = int(step.items_total), int(step.items_succeeded or 0), int(step.items_failed or 0)
    running, waiting = in_flight.get("running", 0), in_flight.get("waiting_retry", 0)
    rest = max(0, total - succeeded - failed - running - waiting)
    open_step = step.status in ("running", "pending", "ready")
    return {
        "total": total, "succeeded": succeeded, "failed": failed, "running": running, "waitingRetry": waiting,
        "pending": rest if open_step else 0, "cancelled": 0 if open_step else rest,
    }


def step_items(
    tx: Tx, run_id: str, step_id: str, account_id: str | None, after: int, limit: int, status: str | None
) -> dict[str, Any]:
    """A page of one map step's items, each with its status, attempts, error, cost and timings."""
    run = runs_q.get(tx, run_id)
    if run is None or (account_id is not None and run.master_account_id != account_id):
        raise NotFound(run_id)
    step = runs_q.step(tx, run_id, step_id)
    if step is None:
        raise NotFound(step_id)
    if step.items_total is None and not is_map_step(tx, run, step_id):
        raise BadRequest("path.step_id", f"step {step_id!r} is not a map step: only a map step has items")
    # a fork's map step taken over from its origin has its items there (unless it was pruned)
    source = step.reused_from_run_id or run_id
    pruned = source != run_id and runs_q.get(tx, source) is None
    rows = [] if pruned else items_q.page(tx, source, step_id, after=after, limit=limit + 1, status=status)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "runId": run_id,
        "stepId": step_id,
        "reusedFromRunId": step.reused_from_run_id,
        "reusedFromPruned": pruned if step.reused_from_run_id else None,
        "counts": item_counts(step, items_q.running_counts(tx, run_id).get(step_id, {})),
        "items": [
            {
                "index": r.item_index,
                "status": r.status,
                "item": items_q.value(r),
                "attempt": r.attempt,
                "toolId": r.tool_id,
                "usingFallback": r.using_fallback,
                "generationId": r.generation_id,
                "childRunId": r.child_run_id,
                "outputs": r.outputs,
                "error": r.error,
                "costUsd": str(r.cost_usd) if r.cost_usd is not None else "0",
                "progress": r.progress,
                "nextAttemptAt": iso(r.next_attempt_at),
                "startedAt": iso(r.started_at),
                "finishedAt": iso(r.finished_at),
                "durationMs": duration_ms(r.started_at, r.finished_at),
            }
            for r in rows
        ],
        "nextAfter": rows[-1].item_index if more and rows else None,
    }


def run_events(tx: Tx, run_id: str, account_id: str | None, after: int, limit: int = 1000) -> list[dict[str, Any]]:
    run = runs_q.get(tx, run_id)
    if run is None or (account_id is not None and run.master_account_id != account_id):
        raise NotFound(run_id)
    return [e.as_dict() for e in events_q.since(tx, run_id, after, limit)]


def is_map_step(tx: Tx, run: Any, step_id: str) -> bool:
    """Whether the run's definition (the version it runs) makes ``step_id`` a map step."""
    for step in runs_q.get_snapshot(tx, run.definition_sha).get("steps") or []:
        if isinstance(step, dict) and step.get("stepId") == step_id:
            return step.get("map") is not None
    return False


def encode_cursor(created_at: float, run_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{run_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created_at, run id) of a cursor ``encode_cursor`` made; ValueError for anything else (a
    time that is not a finite number, a run id with a NUL, which PostgreSQL cannot compare)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, run_id = raw.partition("|")
        when = float(created)
        if not math.isfinite(when) or "\x00" in run_id:
            raise ValueError(cursor)
        return when, run_id
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the cursor is not one this server gave out") from None


def live_progress(step: dict[str, Any], tries: list[dict[str, Any]]) -> float | None:
    """How far a running step is, or None when nothing measures it: a map step by its items done,
    another by what its current attempt's service reported. An in-process (builtin) tool reports
    nothing while it works, and its step is not at 0 % for all that: front ends show it busy."""
    items = step.get("items")
    if items and items.get("total"):
        return float(items.get("succeeded", 0) + items.get("failed", 0)) / float(items["total"])
    current = tries[-1] if tries else None
    reported = current.get("progress") if current and current.get("status") == "processing" else None
    return None if reported is None else float(reported)
