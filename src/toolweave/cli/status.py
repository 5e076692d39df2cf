"""``toolweave status``: the live workers and the queue, from any machine sharing the store."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import JSON_HELP, app_session, console, count, print_json, run_main


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _ago(iso_time: str | None, now: str) -> str:
    from datetime import datetime

    if not iso_time:
        return "—"
    at = datetime.fromisoformat(iso_time.replace("Z", "+00:00"))
    return _seconds((datetime.fromisoformat(now.replace("Z", "+00:00")) - at).total_seconds()) + " ago"


def render_status(status: dict[str, Any]) -> list[Any]:
    """What ``toolweave status`` prints: the workers, the queue by service, what waits longest."""
    parts: list[Any] = []
    workers = status["workers"]
    if workers:
        table = Table(title=f"{count(len(workers), 'worker')}, {count(status['slots'], 'slot')}", title_justify="left",
                      expand=False)
        for name, justify in (("worker", "left"), ("kind", "left"), ("slots", "right"), ("in hand", "right"),
                              ("heartbeat", "right")):
            table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for w in workers:
            table.add_row(w["workerId"], w["kind"], str(w["slots"]), str(w.get("tasksHeld", 0)),
                          _ago(w.get("heartbeatAt"), status["checkedAt"]))
        parts.append(table)
    else:
        parts.append(Text("no worker is running: start one with `toolweave worker` (or `toolweave serve`)",
                          style="yellow"))
    if status["services"]:
        table = Table(title="queue by service", title_justify="left", expand=False)
        for name in ("service", "waiting", "later", "sending", "at backend", "oldest waiting"):
            table.add_column(name, justify="left" if name == "service" else "right", overflow="fold")
        for q in status["services"]:
            table.add_row(q["service"], str(q["waiting"]), str(q["scheduled"]), str(q["sending"]),
                          str(q["atBackend"]), _seconds(q["oldestWaitingSeconds"]))
        parts.append(table)
    else:
        parts.append(Text("no step is waiting for a backend"))
    for other in status["other"]:
        parts.append(Text(f"{other['kind']}: {other['waiting']} waiting, {other['scheduled']} later, "
                          f"{other['running']} running"))
    oldest = status["oldestWaiting"]
    if oldest:
        where = f" on {oldest['service']}" if oldest.get("service") else ""
        run = f" (run {oldest['runId']})" if oldest.get("runId") else ""
        parts.append(Text(f"oldest waiting: a {oldest['kind']} task{where}{run}, {_seconds(oldest['waitingSeconds'])}"))
    if status["queuedRuns"]:
        parts.append(Text(f"{count(status['queuedRuns'], 'run')} queued: {status['waitingReason']}",
                          style="yellow" if not workers else ""))
    return parts


def status_command(json_output: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Show the live workers (slots, tasks in hand, last heartbeat) and the queue per service."""

    async def main() -> int:
        async with app_session() as tw:
            status = await tw.queue_status(None)
        if json_output:
            print_json(status)
            return 0
        for part in render_status(status):
            console.print(part, soft_wrap=isinstance(part, Text))
        return 0

    run_main(main())
