"""Test-only tools: registered only when asked for (``BuiltinService(test_tools=True)``).

- ``test.instant``: returns ``value + 1`` and passes ``note`` through; as cheap as a tool can be
  (the engine benchmark runs thousands of them per second).
- ``test.sleep``: waits ``seconds`` without holding a thread.
- ``test.fail_n_times``: fails its first ``n`` attempts for a ``key``. Attempts are counted in a
  file under the service's state folder (``TOOLWEAVE_TEST_STATE``, else ``<home>/test-state``)
  so the count holds across worker processes; without a state folder ``GenerationContext.attempt``
  (1 for the first attempt) is used.
- ``test.slow_async``: behaves like a remote backend that accepts client-chosen ids. ``submit``
  returns a platform run id and no update; ``poll`` reports progress until ``seconds`` have passed
  since the first submission or the ``gate`` file exists, then completes (or fails when ``fail``).
  Submitting the same generation again re-attaches to the same run. Every *new* submission is
  appended as one line (the generation id) to ``submissions.log`` in ``TOOLWEAVE_TEST_LEDGER``.
  Run records live in the state folder (so they survive restarts), else in memory; the platform
  run id also carries the deadline, so a poll still completes after a restart without records. Its
  backend may also report by webhook (``parse_test_webhook``), as ``bench/ingress.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolweave.model.definitions import InputParam, OutputParam, ParamType, PlatformHints, ToolDefinition
from toolweave.model.records import RunUpdate, ServiceErrorInfo
from toolweave.model.status import GenerationStatus
from toolweave.services.base import ServiceError, Submission, WebhookRejected, WebhookUpdate
from toolweave.services.builtin._common import SERVICE_NAME, BuiltinTool, ToolContext, bad_input, free

LEDGER_NAME = "submissions.log"
REATTACHED_NAME = "reattached.log"
"""Where a resubmission of a known generation (a re-attachment) is written, one line each."""
RUN_PREFIX = "slow-"


def _definition(tool_id: str, display_name: str, description: str, inputs: list[InputParam],
                outputs: list[OutputParam], handler_type: str = "sync") -> ToolDefinition:
    return ToolDefinition(
        tool_id=tool_id,
        service=SERVICE_NAME,
        display_name=display_name,
        description=description,
        input_schema=inputs,
        output_schema=outputs,
        costing_model=free(),
        platform_hints=PlatformHints(category="test", handler_type=handler_type),
        metadata={"provider": "builtin", "testOnly": True},
    )


# --- test.instant ------------------------------------------------------------------------------

INSTANT = _definition(
    "test.instant",
    "Test: instant",
    "Returns value + 1 and passes note through, at once.",
    [
        InputParam(name="value", type=ParamType.INTEGER, default=0, description="Any integer."),
        InputParam(name="note", type=ParamType.TEXT, default="", description="Passed through unchanged."),
    ],
    [
        OutputParam(name="value", type=ParamType.INTEGER, description="The input value plus one."),
        OutputParam(name="note", type=ParamType.TEXT, description="The input note."),
    ],
)


async def run_instant(ctx: ToolContext) -> dict[str, Any]:
    raw = ctx.inputs
    value = raw.get("value", 0)
    if value is None:
        value = 0
    if type(value) is not int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise bad_input(f"test.instant: input 'value' must be an integer, got {value!r}")
    note = raw.get("note")
    if len(raw) > 2 or any(k not in ("value", "note") for k in raw):
        unknown = sorted(k for k in raw if k not in ("value", "note"))
        raise bad_input(f"test.instant: unknown input(s) {', '.join(map(repr, unknown))} (inputs: note, value)")
    return {"value": value + 1, "note": "" if note is None else str(note)}


# --- test.sleep --------------------------------------------------------------------------------

SLEEP = _definition(
    "test.sleep",
    "Test: sleep",
    "Waits `seconds`, then returns them.",
    [InputParam(name="seconds", type=ParamType.NUMBER, default=1.0, minimum=0.0, maximum=3600.0,
                description="How long to wait.")],
    [OutputParam(name="slept", type=ParamType.NUMBER, description="The seconds waited.")],
)


async def run_sleep(ctx: ToolContext) -> dict[str, Any]:
    seconds = ctx.inputs["seconds"]
    await asyncio.sleep(seconds)
    return {"slept": seconds}


# --- test.fail_n_times -------------------------------------------------------------------------

FAIL_N_TIMES = _definition(
    "test.fail_n_times",
    "Test: fail n times",
    "Fails the first `n` attempts for `key` (retryable unless `retryable` is false), then succeeds.",
    [
        InputParam(name="n", type=ParamType.INTEGER, default=1, minimum=0, maximum=1000,
                   description="How many attempts fail before one succeeds."),
        InputParam(name="key", type=ParamType.STRING,
                   description="Attempts are counted per key (default: per run and step)."),
        InputParam(name="retryable", type=ParamType.BOOLEAN, default=True,
                   description="Whether the failures are retryable."),
    ],
    [
        OutputParam(name="attempts", type=ParamType.INTEGER, description="The attempt that succeeded (1-based)."),
        OutputParam(name="key", type=ParamType.STRING, description="The key."),
    ],
)


def count_attempt(state_dir: Path, key: str) -> int:
    """Record one attempt for ``key`` and return how many there have been (this one included)."""
    folder = state_dir / "fail_n_times"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".attempts")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


async def run_fail_n_times(ctx: ToolContext) -> dict[str, Any]:
    n, retryable = ctx.inputs["n"], ctx.inputs["retryable"]
    key = ctx.inputs["key"] or f"{ctx.gen.run_id}/{ctx.gen.step_id}"
    if ctx.state_dir is not None:
        attempt = await asyncio.to_thread(count_attempt, ctx.state_dir, key)
    else:
        attempt = ctx.gen.attempt
    if attempt <= n:
        raise ServiceError(
            f"test.fail_n_times: attempt {attempt} of key {key!r} fails on purpose ({n} failures asked)",
            retryable=retryable, code="test_failure", details={"attempt": attempt, "n": n, "key": key},
        )
    return {"attempts": attempt, "key": key}


# --- test.slow_async ---------------------------------------------------------------------------

SLOW_ASYNC = _definition(
    "test.slow_async",
    "Test: slow asynchronous",
    "An asynchronous backend stand-in: completes on a poll once `seconds` have passed since the first "
    "submission, or once the `gate` file exists. Resubmitting the same generation re-attaches.",
    [
        InputParam(name="seconds", type=ParamType.NUMBER, default=2.0, minimum=0.0, maximum=7 * 86400.0,
                   description="Completes this long after the first submission."),
        InputParam(name="gate", type=ParamType.STRING,
                   description="A file path; the run completes as soon as the file exists."),
        InputParam(name="note", type=ParamType.TEXT, default="", description="Passed through to the output."),
        InputParam(name="fail", type=ParamType.BOOLEAN, default=False,
                   description="Finish with a (non-retryable) failure instead of completing."),
    ],
    [
        OutputParam(name="note", type=ParamType.TEXT, description="The input note."),
        OutputParam(name="waited", type=ParamType.NUMBER, description="Seconds from first submission to completion."),
    ],
    handler_type="async",
)


@dataclass
class _SlowRun:
    generation_id: str
    platform_run_id: str
    submitted_at: float
    seconds: float
    gate: str | None
    note: str
    fail: bool
    cancelled: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> _SlowRun:
        return cls(**json.loads(text))


_WEBHOOK_STATUSES = {
    "processing": GenerationStatus.PROCESSING,
    "completed": GenerationStatus.COMPLETED,
    "failed": GenerationStatus.FAILED,
}


def parse_test_webhook(body: bytes) -> WebhookUpdate:
    """A webhook of ``test.slow_async``'s stand-in backend: ``{"runId", "status", "progress",
    "outputs", "eventId"}`` (``WebhookRejected`` for anything else)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise WebhookRejected("the body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("runId"), str) or data.get("status") not in _WEBHOOK_STATUSES:
        raise WebhookRejected('expected {"runId": …, "status": "processing"|"completed"|"failed"}')
    status = _WEBHOOK_STATUSES[data["status"]]
    progress = data.get("progress")
    if progress is not None and not (isinstance(progress, int | float) and 0 <= progress <= 1):
        raise WebhookRejected("progress must be a number from 0 to 1")
    outputs = data.get("outputs")
    if status is GenerationStatus.COMPLETED and not isinstance(outputs, dict):
        raise WebhookRejected("a completed run's webhook carries its outputs")
    update = RunUpdate(
        status=status, progress=progress, outputs=outputs if status is GenerationStatus.COMPLETED else None,
        error=ServiceErrorInfo(message="the test backend reported a failure", retryable=False)
        if status is GenerationStatus.FAILED else None,
    )
    event = data.get("eventId")
    return WebhookUpdate(data["runId"], update, event_key=str(event)[:100] if event is not None else None)


def run_id_for(generation_id: str, deadline: float) -> str:
    return f"{RUN_PREFIX}{generation_id}~{round(deadline * 1000)}"


def parse_run_id(platform_run_id: str) -> tuple[str, float] | None:
    if not platform_run_id.startswith(RUN_PREFIX) or "~" not in platform_run_id:
        return None
    gen_id, _, millis = platform_run_id[len(RUN_PREFIX):].rpartition("~")
    if not millis.isdigit():
        return None
    return gen_id, int(millis) / 1000


@dataclass
class SlowAsync:
    """The backend behind ``test.slow_async``: run records in ``state_dir`` or in memory."""

    state_dir: Path | None = None
    ledger_dir: Path | None = None
    poll_after_seconds: float = 0.2
    _memory: dict[str, _SlowRun] = field(default_factory=dict)

    def _record_path(self, generation_id: str) -> Path | None:
        if self.state_dir is None:
            return None
        name = hashlib.sha256(generation_id.encode()).hexdigest()[:40]
        return self.state_dir / "slow_async" / f"{name}.json"

    def _create(self, run: _SlowRun) -> tuple[_SlowRun, bool]:
        """Create the run record, or return the existing one; ``True`` when created now."""
        path = self._record_path(run.generation_id)
        if path is None:
            existing = self._memory.get(run.generation_id)
            if existing is not None:
                return existing, False
            self._memory[run.generation_id] = run
            return run, True
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(run.to_json())
            try:
                os.link(tmp, path)  # atomic: fails if another submission got there first
            except FileExistsError:
                return _SlowRun.from_json(path.read_text()), False
            return run, True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _load(self, generation_id: str) -> _SlowRun | None:
        path = self._record_path(generation_id)
        if path is None:
            return self._memory.get(generation_id)
        try:
            return _SlowRun.from_json(path.read_text())
        except FileNotFoundError:
            return None

    def _save(self, run: _SlowRun) -> None:
        path = self._record_path(run.generation_id)
        if path is None:
            self._memory[run.generation_id] = run
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as fh:
            fh.write(run.to_json())
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _ledger_lock(self) -> Iterator[None]:
        """Creating a run record and logging it, one process at a time (``fcntl.flock`` on the ledger
        folder's lock file; the kernel releases it when its holder is killed). A process killed
        between the two leaves a record its ledger line is missing from: the next submission of that
        generation finds the record, sees the line missing and logs the creation (``_logged``), so
        the ledger lists every created run once, whatever was killed where."""
        if self.ledger_dir is None:
            yield
            return
        import fcntl

        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.ledger_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _logged(self, generation_id: str) -> bool:
        """Whether the ledger lists the creation of ``generation_id``'s run (no ledger: it is taken as
        logged)."""
        if self.ledger_dir is None:
            return True
        try:
            return generation_id in (self.ledger_dir / LEDGER_NAME).read_text().split()
        except FileNotFoundError:
            return False

    def _append_ledger(self, generation_id: str, name: str = LEDGER_NAME) -> None:
        if self.ledger_dir is None:
            return
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.ledger_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{generation_id}\n".encode())
        finally:
            os.close(fd)

    def _submit(self, ctx: ToolContext) -> Submission:
        i = ctx.inputs
        now = time.time()
        gen_id = ctx.gen.generation_id
        run = _SlowRun(
            generation_id=gen_id,
            platform_run_id=run_id_for(gen_id, now + i["seconds"]),
            submitted_at=now,
            seconds=i["seconds"],
            gate=i["gate"] or None,
            note=i["note"] or "",
            fail=i["fail"],
        )
        with self._ledger_lock():
            run, created = self._create(run)
            if not created and not self._logged(gen_id):
                created = True  # its creator died before it logged it: the creation is logged now
            self._append_ledger(gen_id, LEDGER_NAME if created else REATTACHED_NAME)
        return Submission(platform_run_id=run.platform_run_id, update=None,
                          poll_after_seconds=min(self.poll_after_seconds, max(run.seconds, 0.01)))

    async def submit(self, ctx: ToolContext) -> Submission:
        return await asyncio.to_thread(self._submit, ctx)

    def _gate_open(self, gate: str) -> bool:
        path = Path(gate).expanduser()
        if not path.is_absolute() and self.state_dir is not None:
            path = self.state_dir / path
        return path.exists()

    def _poll(self, ctx: ToolContext) -> RunUpdate:
        gen = ctx.gen
        platform_run_id = gen.platform_run_id
        run = self._load(gen.generation_id)
        if run is None:
            parsed = parse_run_id(platform_run_id or "")
            if parsed is None or parsed[0] != gen.generation_id:
                raise ServiceError(
                    f"test.slow_async: no run {platform_run_id or gen.generation_id!r}", retryable=False,
                    code="not_found",
                )
            seconds = float(gen.inputs.get("seconds") or 0)
            run = _SlowRun(
                generation_id=gen.generation_id, platform_run_id=platform_run_id or "",
                submitted_at=parsed[1] - seconds, seconds=seconds, gate=gen.inputs.get("gate") or None,
                note=str(gen.inputs.get("note") or ""), fail=bool(gen.inputs.get("fail")),
            )
        if run.cancelled:
            return RunUpdate(status=GenerationStatus.CANCELLED, platform_run_id=run.platform_run_id)
        elapsed = max(0.0, time.time() - run.submitted_at)
        done = elapsed >= run.seconds or (run.gate is not None and self._gate_open(run.gate))
        if not done:
            return RunUpdate(
                status=GenerationStatus.PROCESSING,
                progress=min(0.99, elapsed / run.seconds) if run.seconds else None,
                live_status=f"waiting ({elapsed:.1f}s of {run.seconds:g}s)",
                platform_run_id=run.platform_run_id,
            )
        if run.fail:
            return RunUpdate(
                status=GenerationStatus.FAILED,
                platform_run_id=run.platform_run_id,
                error=ServiceErrorInfo(message="test.slow_async failed on purpose (input 'fail')",
                                       retryable=False, code="test_failure"),
            )
        return RunUpdate(
            status=GenerationStatus.COMPLETED,
            progress=1.0,
            platform_run_id=run.platform_run_id,
            outputs={"note": run.note, "waited": round(elapsed, 3)},
        )

    async def poll(self, ctx: ToolContext) -> RunUpdate:
        return await asyncio.to_thread(self._poll, ctx)

    def _cancel(self, ctx: ToolContext) -> None:
        run = self._load(ctx.gen.generation_id)
        if run is None or run.cancelled:
            return
        run.cancelled = True
        self._save(run)

    async def cancel(self, ctx: ToolContext) -> None:
        await asyncio.to_thread(self._cancel, ctx)


def make_test_tools(state_dir: Path | None = None, ledger_dir: Path | None = None) -> list[BuiltinTool]:
    """Fresh test tools; ``test.slow_async`` keeps its runs in ``state_dir`` (or in memory)."""
    return [
        BuiltinTool(INSTANT.model_copy(deep=True), run_instant, raw_inputs=True),
        BuiltinTool(SLEEP.model_copy(deep=True), run_sleep),
        BuiltinTool(FAIL_N_TIMES.model_copy(deep=True), run_fail_n_times),
        BuiltinTool(SLOW_ASYNC.model_copy(deep=True),
                    asynchronous=SlowAsync(state_dir=state_dir, ledger_dir=ledger_dir)),
    ]

