"""How the command line shows runs: status colours, the steps, runs and generations tables, event
lines, the final summary and ``runs show``; and the run's output files (exported on request)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import count
from toolweave.model.status import RunStatus

if TYPE_CHECKING:
    from toolweave.app import App

STATUS_STYLES = {
    "queued": "dark_orange",
    "pending": "dim",
    "ready": "cyan",
    "running": "yellow",
    "waiting_retry": "magenta",
    "waiting_input": "bold magenta",
    "succeeded": "green",
    "completed": "green",
    "partially_completed": "dark_orange",
    "failed": "red",
    "skipped": "bright_black",
    "cancelled": "bright_black",
}


def styled(status: str | None) -> Text:
    text = status or "-"
    return Text(text, style=STATUS_STYLES.get(text, ""))


def seconds(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms / 1000:.2f}s"


def _elapsed(started_iso: str | None, finished_iso: str | None) -> str:
    if not started_iso:
        return "-"
    start = datetime.fromisoformat(started_iso.replace("Z", "+00:00")).timestamp()
    end = datetime.fromisoformat(finished_iso.replace("Z", "+00:00")).timestamp() if finished_iso else time.time()
    return f"{max(0.0, end - start):.2f}s"


def _progress(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100)}%"


def _step_progress(run: dict[str, Any], step: dict[str, Any]) -> str:
    """A step's progress: measured (``40%``), busy without a measure (``…``: an in-process tool
    reports none while it works), or not started (``-``)."""
    if step["status"] not in ("running", "ready"):
        return _progress(step.get("progress"))
    from toolweave.run_views import live_progress

    tries = sorted((g for g in run.get("generations") or []
                    if g["stepId"] == step["stepId"] and g.get("itemIndex") is None), key=lambda g: g["attempt"])
    measured = live_progress(step, tries)
    return "…" if measured is None else _progress(measured)


def _table(title: str | None) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)


def steps_table(run: dict[str, Any], *, title: str | None = None) -> Table:
    table = _table(title)
    table.add_column("step", no_wrap=True)
    table.add_column("tool", no_wrap=True)
    table.add_column("status", no_wrap=True)
    ongoing = not RunStatus(run["status"]).terminal
    for column in ("try", "done", "time") if ongoing else ("try", "time"):  # attempt, progress, duration
        table.add_column(column, no_wrap=True, justify="right")
    table.add_column("note", overflow="fold", ratio=1)
    for step in run.get("stepStatuses") or []:
        note = step.get("reason") or ""
        error = step.get("error")
        if error and step["status"] in ("failed", "waiting_retry", "cancelled"):
            note = error.get("message", "") if isinstance(error, dict) else str(error)
        elif error and step["status"] == "succeeded" and int(step.get("attempt") or 0) > 1:
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            note = f"earlier attempt: {message}"
        if step["status"] == "waiting_retry" and step.get("nextAttemptAt"):
            note = f"retry at {step['nextAttemptAt'][11:23]}; {note}"
        if step.get("reusedFromRunId"):
            pruned = " (pruned)" if step.get("reusedFromPruned") else ""
            note = f"reused from {step['reusedFromRunId']}{pruned}" + (f"; {note}" if note else "")
        if step.get("items"):
            note = items_note(step["items"]) + (f"; {note}" if note else "")
        question = step.get("question")
        if question and question.get("answer") and step["status"] == "succeeded":
            answer = question["answer"]
            chosen = f" #{', #'.join(map(str, answer['chosen']))}" if answer.get("chosen") else ""
            by = question.get("answeredBy") or "the timeout"
            note = f"{answer.get('decision')}{chosen} by {by}" + (f"; {note}" if note else "")
        duration = step.get("durationMs")
        table.add_row(
            Text(step["stepId"]),
            Text(step.get("toolId") or (f"job {step['childRunId']}" if step.get("childRunId") else
                                        f"asks ({question['kind']})" if question else "-")),
            styled(step["status"]),
            Text(str(step.get("attempt") or 0)),
            *([Text(_step_progress(run, step))] if ongoing else []),
            Text(seconds(duration) if duration is not None else _elapsed(step.get("startedAt"), None)
                 if step["status"] == "running" else "-"),
            Text(note),
        )
    return table


def items_note(counts: dict[str, int]) -> str:
    """``items 7/10 done · 1 failed · 2 running`` for a map step's item counts."""
    done = counts["succeeded"] + counts["failed"]
    parts = [f"items {done}/{counts['total']} done"]
    for key, label in (("failed", "failed"), ("running", "running"), ("waitingRetry", "retrying"),
                       ("cancelled", "cancelled")):
        if counts.get(key):
            parts.append(f"{counts[key]} {label}")
    return " · ".join(parts)


def items_table(page: dict[str, Any]) -> Table:
    """A page of a map step's items (``App.step_items``)."""
    counts = page.get("counts")
    title = f"step {page['stepId']}: " + (items_note(counts) if counts else "not a map step, or its list is not known yet")
    table = _table(title)
    for column, justify in (("item", "right"), ("status", "left"), ("try", "right"), ("time", "right"),
                            ("cost", "right")):
        table.add_column(column, no_wrap=True, justify=justify)  # type: ignore[arg-type]
    table.add_column("value → outputs, or error", overflow="fold", ratio=1)
    for item in page["items"]:
        error = item.get("error")
        if error:
            note = error.get("message", "") if isinstance(error, dict) else str(error)
        else:
            note = f"{brief(item.get('item'))}" + (f" → {brief(item['outputs'])}" if item.get("outputs") else "")
        table.add_row(
            Text(str(item["index"])), styled(item["status"]), Text(str(item.get("attempt") or 0)),
            Text(seconds(item.get("durationMs"))), Text(f"${item.get('costUsd') or '0'}"), Text(note),
        )
    if page.get("nextAfter") is not None:
        table.caption = f"more: --after {page['nextAfter']}"
    return table


def shown(value: Any) -> str:
    """A value as JSON, never Python's repr (``registry.describe.shown``, imported when used)."""
    from toolweave.registry.describe import shown as as_json

    return as_json(value)


def origin_text(origin: dict[str, Any] | None) -> str:
    """Where a run came from: ``cli``, ``telegram (chatId 42)``, ``api``."""
    if not origin:
        return "-"
    rest = [f"{key} {shown(value) if not isinstance(value, str) else value}"
            for key, value in origin.items() if key != "platform"]
    platform = str(origin.get("platform") or "?")
    return platform + (f" ({', '.join(rest)})" if rest else "")


def brief(value: Any) -> str:
    from toolweave.model.records import ArtifactRef

    if ArtifactRef.is_ref(value):
        return _describe_artifact(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {brief(v)}" for k, v in value.items())
    text = shown(value)
    return text if len(text) <= 60 else text[:59] + "…"


def run_header(run: dict[str, Any]) -> Text:
    text = Text()
    text.append(f"run {run['jobRunId']}", style="bold")
    text.append(f"  {run['jobDefinitionId']} v{run['version']}  ")
    text.append_text(styled(run["status"]))
    if run.get("statusDetail"):
        text.append(f" — {run['statusDetail']}", style=STATUS_STYLES["queued"])
    duration = run.get("durationMs")
    text.append(f"  {seconds(duration) if duration is not None else _elapsed(run.get('startedAt'), None)}")
    text.append(f"  cost ${run.get('costUsd') or '0'}")
    return text


def render_progress(run: dict[str, Any], started: float) -> Group:
    return Group(run_header(run), steps_table(run))


def event_line(event: dict[str, Any]) -> str:
    stamp = datetime.fromtimestamp(float(event["at"])).strftime("%H:%M:%S.%f")[:-3]
    data = event.get("data") or {}
    parts = [stamp, event["type"]]
    if event.get("stepId"):
        parts.append(event["stepId"] + (f"[{data['item']}]" if data.get("item") is not None else ""))
    if data.get("items") is not None:
        parts.append(count(data["items"], "item"))
    if "attempt" in data:
        parts.append(f"attempt {data['attempt']}")
    if event["type"] in ("step.retry_scheduled", "item.retry_scheduled"):
        delay = float(data.get("at", event["at"])) - float(event["at"])
        parts.append(f"attempt {data.get('nextAttempt')} in {max(0.0, delay):.2f}s")
    if "progress" in data and data["progress"] is not None:
        parts.append(_progress(data["progress"]))
    if data.get("durationMs") is not None:
        parts.append(seconds(data["durationMs"]))
    error = data.get("error")
    message = (error.get("message", "") if isinstance(error, dict) else str(error)) if error else ""
    if data.get("reason") and data["reason"] != message:  # a failed step's reason is often its error
        parts.append(f"({data['reason']})")
    if message:
        parts.append("— " + message)
    return "  ".join(str(p) for p in parts)


def runs_table(items: list[dict[str, Any]], width: int = 120) -> Table:
    """Runs, one a line. Ids, statuses and times are never cut (they are what people paste); the
    job id comes last and folds. Below 100 columns (a pipe is 80) the creation time is left out,
    below 120 the error (``runs show`` has both)."""
    table = _table(f"{len(items)} run{'s' if len(items) != 1 else ''}")
    longest = {key: max((len(str(item.get(key) or "")) for item in items), default=0)
               for key in ("jobRunId", "status")}
    created = width >= 100
    errors = width >= 120 and any(item.get("error") for item in items)
    table.add_column("run", no_wrap=True, min_width=max(3, longest["jobRunId"]))
    table.add_column("status", no_wrap=True, min_width=max(6, longest["status"]))
    if created:
        table.add_column("created", no_wrap=True, min_width=11)
    table.add_column("time", no_wrap=True, justify="right", min_width=5)
    table.add_column("job", overflow="fold", min_width=12)
    if errors:
        table.add_column("error", overflow="fold", ratio=1)
    for item in items:
        error = item.get("error")
        message = error.get("message", "") if isinstance(error, dict) else (error or "")
        version = "" if item["version"] == "1" else f" v{item['version']}"
        table.add_row(
            Text(item["jobRunId"]),
            styled(item["status"]),
            *([Text(_local_time(item.get("createdAt")))] if created else []),
            Text(seconds(item.get("durationMs"))),
            Text(f"{item['jobDefinitionId']}{version}"),
            *([Text(str(message))] if errors else []),
        )
    return table


def _local_time(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%m-%d %H:%M")


def generations_table(run: dict[str, Any]) -> Table:
    table = _table("generations (one per attempt)")
    table.add_column("step", no_wrap=True)
    table.add_column("try", no_wrap=True, justify="right")
    table.add_column("service", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("cost", no_wrap=True, justify="right")
    table.add_column("error", overflow="fold", ratio=1)
    for gen in run.get("generations") or []:
        error = gen.get("error")
        item = gen.get("itemIndex")
        table.add_row(
            Text(gen["stepId"] + (f"[{item}]" if item is not None else "")),
            Text(str(gen.get("attempt"))),
            Text((gen.get("serviceName") or "") + (" (cache hit)" if gen.get("cacheHit") else "")),
            styled(gen.get("status")),
            Text(seconds(gen.get("durationMs"))),
            Text(f"${gen['costUsd']}" if gen.get("costUsd") is not None else "-"),
            Text(error.get("message", "") if isinstance(error, dict) else str(error or "")),
        )
    return table


def _artifact_values(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(suffix, artifact value) for an output that is an artifact or a list of them."""
    from toolweave.model.records import ArtifactRef

    if ArtifactRef.is_ref(value):
        yield "", value
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if ArtifactRef.is_ref(item):
                yield f"-{index + 1}", item


def _describe_artifact(value: dict[str, Any]) -> str:
    parts = [str(value.get("mimeType") or "")]
    if value.get("width") and value.get("height"):
        parts.append(f"{value['width']}×{value['height']}")
    if value.get("size") is not None:
        parts.append(f"{int(value['size']):,} bytes")
    return ", ".join(p for p in parts if p)


async def output_files(
    app: App, run: dict[str, Any], account: str, directory: Path | None = None
) -> list[tuple[str, str, Path]]:
    """(output name, description, file) of each media output: exported to ``directory`` under the
    output's name (overwriting), or else where the artifact store keeps it."""
    import asyncio

    from toolweave.app import NotFound

    found: list[tuple[str, str, Path]] = []
    for name, value in (run.get("finalOutputs") or {}).items():
        for suffix, artifact in _artifact_values(value):
            try:
                path, ref = await app.artifact(artifact["sha256"], account)
            except NotFound:
                continue
            if directory is not None:
                path = await asyncio.to_thread(app.artifacts.export, ref, directory, f"{name}{suffix}")
            found.append((f"{name}{suffix}", _describe_artifact(artifact), path))
    return found


def print_outputs(console: Console, run: dict[str, Any], files: list[tuple[str, str, Path]]) -> None:
    media = {name for name, _, _ in files}
    other = {
        k: v for k, v in (run.get("finalOutputs") or {}).items()
        if k not in media and not any(n.startswith(f"{k}-") for n in media)
    }
    if not files and not other:
        return
    console.print(Text("outputs", style="bold"))
    for name, description, path in files:
        console.print(Text(f"  {name}: {path}  ({description})"), soft_wrap=True)
    for name, value in other.items():
        console.print(Text(f"  {name}: {shown(value)}"), soft_wrap=True)


def print_error(console: Console, run: dict[str, Any]) -> None:
    error = run.get("error")
    if error:
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        console.print(Text(f"error: {message}", style="red"), soft_wrap=True)


def print_question(console: Console, question: dict[str, Any]) -> None:
    """What a waiting step asks, and the command that answers it."""
    run_id, step_id, kind = question["runId"], question["stepId"], question["kind"]
    console.print(Text(f"step {step_id} asks: {question.get('text')}", style="bold magenta"), soft_wrap=True)
    for index, candidate in enumerate(question.get("candidates") or []):
        console.print(Text(f"  [{index}] {brief(candidate)}"), soft_wrap=True)
    for name, value in (question.get("values") or {}).items():
        console.print(Text(f"  {name} = {value!r}"), soft_wrap=True)
    for name, value in (question.get("shown") or {}).items():
        console.print(Text(f"  {name}: {brief(value)}"), soft_wrap=True)
    how = {"choose": "--choose N", "edit": "--approve [--set name=value ...]", "approve": "--approve"}[kind]
    console.print(Text(f"  answer: toolweave runs answer {run_id} {step_id} {how}   (or --reject); "
                       f"unanswered by {question.get('expiresAt')}: {question.get('onTimeout', 'reject')}"),
                  soft_wrap=True)


async def summary(
    app: App, run: dict[str, Any], account: str, console: Console, output_dir: Path | None = None
) -> list[tuple[str, str, Path]]:
    """The final view of a run (or of one waiting for an answer): header, steps, error, what it
    asks, output files (exported when asked)."""
    console.print(run_header(run))
    console.print(steps_table(run))
    print_error(console, run)
    for question in run.get("waitingFor") or []:
        print_question(console, question)
    files = await output_files(app, run, account, output_dir)
    print_outputs(console, run, files)
    return files


async def show(app: App, run: dict[str, Any], account: str, console: Console) -> None:
    """Everything about one run (``runs show``)."""
    console.print(run_header(run))
    for label, key in (("created", "createdAt"), ("started", "startedAt"), ("finished", "finishedAt")):
        console.print(Text(f"  {label}: {run.get(key) or '-'}"))
    console.print(Text(f"  account: {run.get('masterAccountId')}  origin: {origin_text(run.get('origin'))}"))
    if run.get("forkedFromRunId"):
        step = f" from step {run['forkedFromStep']}" if run.get("forkedFromStep") else ""
        pruned = " (pruned)" if run.get("forkedFromPruned") else ""
        console.print(Text(f"  forked from run {run['forkedFromRunId']}{pruned}{step}"))
    from toolweave.model.records import ArtifactRef

    inputs = run.get("jobInputs") or {}
    if inputs:
        console.print(Text("inputs", style="bold"))
        for name, value in inputs.items():
            text = _describe_artifact(value) if ArtifactRef.is_ref(value) else shown(value)
            console.print(Text(f"  {name}: {text}"), soft_wrap=True)
    console.print(steps_table(run, title="steps"))
    for question in run.get("waitingFor") or []:
        print_question(console, question)
    if run.get("generations"):
        console.print(generations_table(run))
    print_error(console, run)
    print_outputs(console, run, await output_files(app, run, account))
    for note in run.get("notifications") or []:
        console.print(
            Text(f"notification {note['channel']} {note['eventType']}: {note['status']} after "
                 f"{count(note['attempts'], 'attempt')}{' — ' + note['lastError'] if note.get('lastError') else ''}"),
            soft_wrap=True,
        )
