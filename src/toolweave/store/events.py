"""The append-only event feed of each run (progress, step changes): what SSE and chat follow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolweave.store.db import Tx

_INSERT = (
    "INSERT INTO events (run_id, type, step_id, data, created_at) VALUES (:run_id, :type, :step_id, :data, :created_at)"
)


@dataclass(frozen=True)
class Event:
    event_id: int
    run_id: str
    type: str
    step_id: str | None
    data: dict[str, Any]
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.event_id,
            "runId": self.run_id,
            "type": self.type,
            "stepId": self.step_id,
            "data": self.data,
            "at": self.created_at,
        }


def append(tx: Tx, run_id: str, type_: str, now: float, *, step_id: str | None = None, **data: Any) -> None:
    append_many(tx, [{"run_id": run_id, "type": type_, "step_id": step_id, "data": data, "created_at": now}])


def append_many(tx: Tx, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of ``{run_id, type, step_id, data, created_at}``; written together at commit, in order."""
    if rows:
        tx.defer(_INSERT, rows)
        tx.event_runs.update(r["run_id"] for r in rows)


def since(tx: Tx, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
    rows = tx.all(
        "SELECT * FROM events WHERE run_id = :run_id AND event_id > :after ORDER BY event_id LIMIT :limit",
        {"run_id": run_id, "after": after, "limit": limit},
    )
    return [Event(r.event_id, r.run_id, r.type, r.step_id, r.data, r.created_at) for r in rows]
