"""``toolweave run JOB --batch rows.csv|rows.jsonl``: one run per row, followed together.

Each row is one run's inputs: a CSV row under a header of input names (an empty cell is an input
not given), or a JSON object per line of a JSON Lines file. A row that cannot be read, or whose
inputs the tool or job refuses, is reported with its line number; the others run. Every row has
its own idempotency key (the batch's id and the row's line), so running the same command again
attaches to the runs it made instead of making them twice. The runs are submitted in bulk
(``App.submit_many``), followed with one progress bar (a worker runs in this process when none is
alive), and summed up in a table, with each row's output files in a folder of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from toolweave.cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_REFUSED,
    EXIT_WAITING,
    CliError,
    console,
    err_console,
    exit_code,
    print_json,
)
from toolweave.cli.render import brief as _brief
from toolweave.cli.render import output_files, seconds, styled
from toolweave.model.status import RunStatus

if TYPE_CHECKING:
    from toolweave.app import App

MAX_ROWS = 100_000
MAX_BYTES = 64 * 1024 * 1024
POLL_SECONDS = 0.5
LIVENESS_CHECK_SECONDS = 5.0
SEVERITY = [EXIT_OK, EXIT_WAITING, EXIT_PARTIAL, EXIT_CANCELLED, EXIT_FAILED, EXIT_REFUSED]
"""The exit code of a batch is its worst row's, in this order (a refused row is the worst)."""


@dataclass
class Row:
    """One row of a batch file: its line, and its inputs or why it cannot be run."""

    line: int
    inputs: dict[str, Any] | None = None
    error: str | None = None
    run_id: str | None = None
    created: bool = False
    status: str | None = None
    run: dict[str, Any] = field(default_factory=dict)
    files: list[tuple[str, str, Path]] = field(default_factory=list)


def read_rows(path: Path) -> tuple[list[Row], bytes]:
    """The rows of a ``.csv`` or ``.jsonl`` file, and the file's bytes; a row that cannot be read
    carries its error (the file as a whole is refused only when it cannot be read at all)."""
    kind = path.suffix.lower()
    if kind not in (".csv", ".jsonl", ".ndjson"):
        raise CliError(f"--batch takes a .csv or a .jsonl file, not {path.name!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"the batch file cannot be read: {exc}") from None
    if len(data) > MAX_BYTES:
        raise CliError(f"the batch file is larger than {MAX_BYTES // (1024 * 1024)} MB; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"the batch file is not UTF-8 text: {exc}") from None
    rows = _csv_rows(text) if kind == ".csv" else _jsonl_rows(text)
    if not rows:
        raise CliError(f"{path.name} holds no rows")
    if len(rows) > MAX_ROWS:
        raise CliError(f"{path.name} holds {len(rows)} rows; a batch takes at most {MAX_ROWS:,}")
    return rows, data


def _csv_rows(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise CliError(f"line 1: the header cannot be read: {exc}") from None
    names = [name.strip() for name in header]
    if not any(names) or "" in names:
        raise CliError("line 1: every column of the header must name an input")
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise CliError(f"line 1: the header names {', '.join(map(repr, doubled))} twice")
    rows: list[Row] = []
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append(Row(line, error=f"cannot be read as CSV: {exc}"))
            line = reader.line_num + 1
            continue
        if values and any(v.strip() for v in values):  # blank lines are not rows
            if len(values) != len(names):
                rows.append(Row(line, error=f"{len(values)} values for {len(names)} columns ({', '.join(names)})"))
            else:
                rows.append(Row(line, inputs={n: v for n, v in zip(names, values, strict=True) if v != ""}))
        line = reader.line_num + 1
    return rows


def _jsonl_rows(text: str) -> list[Row]:
    rows: list[Row] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            rows.append(Row(number, error=f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(value, dict):
            rows.append(Row(number, error=f"a row is a JSON object of inputs, not {type(value).__name__}"))
            continue
        rows.append(Row(number, inputs=value))
    return rows


def batch_id(target: str, version: str | None, data: bytes) -> str:
    """The default id of a batch: the same file for the same tool or job gives the same id (and so
    the same idempotency key per row: running the command again attaches to the runs it made)."""
    digest = hashlib.sha256(f"{target}\0{version or ''}\0".encode() + data).hexdigest()
    return digest[:16]


async def submit_rows(
    app: App, target: str, rows: list[Row], folder: Path, *, account: str, version: str | None, key: str,
    shared: dict[str, str] | None = None,
) -> None:
    """Submit every readable row (in bulk); each row gets its run id, or the reason it was refused.
    ``shared`` (``-i`` options) gives inputs to every row that does not give them itself."""
    from toolweave.app import UnknownDefinition

    try:
        job = app.job_for(target, version)
    except UnknownDefinition as exc:
        raise CliError(f"{exc.args[0]} (see `toolweave tools list` and `toolweave jobs list`)") from None
    from toolweave.cli.submitting import at_files, read_at_files

    common, local = read_at_files(job, shared) if shared else ({}, False)
    ready: list[tuple[Row, dict[str, Any]]] = []
    for row in rows:
        if row.error is not None:
            continue
        inputs, paths, problems = at_files(job, row.inputs or {}, folder)
        if problems:
            row.error = "; ".join(problems)
            continue
        local = local or paths
        ready.append((row, {**common, **inputs}))
    await app.ensure_account(account)
    results = await app.submit_many(
        target, [inputs for _, inputs in ready], account_id=account, version=version,
        idempotency_keys=[f"batch:{key}:{row.line}" for row, _ in ready],
        origin={"platform": "cli", "batch": key}, coerce_text=True, allow_local_paths=local,
    )
    for (row, _), result in zip(ready, results, strict=True):
        if result.error is not None:
            refused = getattr(result.error, "problems", None)
            row.error = "; ".join(f"{p.field}: {p.message}" for p in refused) if refused else str(result.error)
        else:
            row.run_id, row.created = result.run_id, result.created


async def follow_rows(app: App, rows: list[Row], account: str, *, worker: str, show: bool) -> bool:
    """Follow the batch's runs to their end with one progress bar; False when Ctrl-C stopped it."""
    from toolweave.cli.following import InProcessWorker, SigintCatcher

    running = {row.run_id: row for row in rows if row.run_id}
    own = InProcessWorker(app)
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(), console=err_console, transient=False, disable=not show,
    )
    bar = progress.add_task("runs", total=len(running), counts="")
    with SigintCatcher() as sigint, progress:
        await own.ensure(worker)
        next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
        try:
            while True:
                statuses = await app.run_statuses(list(running), account)
                for run_id, status in statuses.items():
                    running[run_id].status = status
                # a run waiting for a person's answer goes no further by itself: it counts as stopped
                done = sum(1 for row in running.values()
                           if row.status and (RunStatus(row.status).terminal or row.status == RunStatus.WAITING_INPUT.value))
                counts: dict[str, int] = {}
                for row in running.values():
                    counts[row.status or "queued"] = counts.get(row.status or "queued", 0) + 1
                progress.update(bar, completed=done, counts=" · ".join(f"{n} {s}" for s, n in sorted(counts.items())))
                if done == len(running):
                    return True
                if worker == "auto" and time.monotonic() >= next_check:
                    next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
                    await own.ensure(worker)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sigint.event.wait(), POLL_SECONDS)
                if sigint.event.is_set():
                    return False
        finally:
            await own.stop()


def summary_table(rows: list[Row], *, waited: bool) -> Table:
    table = Table(title=f"{len(rows)} row{'s' if len(rows) != 1 else ''}", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False)
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("run", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if waited:
        table.add_column("time", justify="right", no_wrap=True)
        table.add_column("cost", justify="right", no_wrap=True)
    table.add_column("outputs, or what went wrong", overflow="fold", ratio=1)
    for row in rows:
        if row.error is not None:
            cells = [Text("-"), Text("refused", style="red")]
            note = row.error
        else:
            status = row.status or ("submitted" if row.created else "submitted before")
            cells = [Text(row.run_id or "-"), styled(status) if row.status else Text(status)]
            error = row.run.get("error")
            note = (error.get("message", "") if isinstance(error, dict) else str(error or "")) if error else ""
            if not note and row.files:
                note = ", ".join(str(path) for _, _, path in row.files)
            elif not note and row.run.get("finalOutputs"):
                note = ", ".join(f"{name}: {_brief(value)}" for name, value in row.run["finalOutputs"].items())
        done = row.error is None and bool(row.run)
        table.add_row(
            Text(str(row.line)), *cells,
            *([Text(seconds(row.run.get("durationMs")) if done else "-"),
               Text(f"${row.run.get('costUsd') or '0'}" if done else "-")] if waited else []),
            Text(note),
        )
    return table


def batch_exit_code(rows: list[Row], *, waited: bool) -> int:
    codes = [EXIT_REFUSED if row.error is not None else exit_code(row.status) if waited and row.status else EXIT_OK
             for row in rows]
    return max(codes, key=SEVERITY.index) if codes else EXIT_OK


async def run_batch(
    app: App, target: str, path: Path, *, account: str, version: str | None, key: str | None, wait: bool,
    output: Path | None, json_output: bool, worker: str, show: bool, shared: dict[str, str] | None = None,
) -> int:
    """The ``run --batch`` command: read, submit, (follow, export,) sum up. Returns the exit code."""
    rows, data = read_rows(path)
    key = key or batch_id(target, version, data + json.dumps(shared or {}, sort_keys=True).encode())
    await submit_rows(app, target, rows, path.parent, account=account, version=version, key=key, shared=shared)
    accepted = [row for row in rows if row.run_id]
    refused = len(rows) - len(accepted)
    if show:
        err_console.print(
            f"batch {key}: {len(accepted)} run{'s' if len(accepted) != 1 else ''} submitted"
            + (f" ({sum(1 for r in accepted if not r.created)} of them before)" if any(not r.created for r in accepted) else "")
            + (f", {refused} row{'s' if refused != 1 else ''} refused" if refused else ""),
            highlight=False,
        )
    waited = wait or output is not None
    if waited and accepted:
        if not await follow_rows(app, rows, account, worker=worker, show=show):
            err_console.print(
                f"stopped following batch {key}; its runs are durable and go on when a worker runs. "
                "Run the same command again to follow them (its rows attach to the runs already made).",
                highlight=False, soft_wrap=True,
            )
            return EXIT_INTERRUPTED
        for row in accepted:
            row.run = await app.get_run(row.run_id or "", account)
            row.status = row.run["status"]
            if output is not None:
                row.files = await output_files(app, row.run, account, output / f"line-{row.line}")
    if json_output:
        print_json({
            "batchId": key,
            "rows": [
                {"line": row.line, "jobRunId": row.run_id, "created": row.created if row.run_id else None,
                 "status": row.status, "error": row.error, "outputs": row.run.get("finalOutputs") if row.run else None,
                 "files": {name: str(file) for name, _, file in row.files} or None}
                for row in rows
            ],
        })
    else:
        console.print(summary_table(rows, waited=waited))
    return batch_exit_code(rows, waited=waited)
