"""The engine commands of the command line (``run``, ``runs``, ``worker``, ``demo``, ``db``).

``cli.py`` declares the commands; the work happens here, against the ``App`` facade only.
Everything is async; each command runs one ``asyncio.run``. Problems a person can fix leave as
``CliError`` (a message, detail lines and an exit code), never as a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from toolweave.model.records import ArtifactRef
from toolweave.model.status import RunStatus

if TYPE_CHECKING:  # the app (store, services) is imported when a command needs it: --help stays fast
    from toolweave.app import App

LOCAL_ACCOUNT = "local"
"""The account the command line acts as (the local operator), unless ``--account`` says otherwise."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
EXIT_CANCELLED = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    RunStatus.COMPLETED: EXIT_OK,
    RunStatus.PARTIALLY_COMPLETED: EXIT_PARTIAL,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.CANCELLED: EXIT_CANCELLED,
}

STATUS_STYLES = {
    "pending": "dim",
    "ready": "cyan",
    "running": "yellow",
    "waiting_retry": "magenta",
    "succeeded": "green",
    "completed": "green",
    "partially_completed": "dark_orange",
    "failed": "red",
    "skipped": "bright_black",
    "cancelled": "bright_black",
}

DEMO_JOB_FILE = "demo_variants.yaml"
DEMO_JOB_ID = "demo_variants"
DEMO_IMAGE_FILE = "sample.png"

POLL_SECONDS = 0.2
LIVENESS_CHECK_SECONDS = 5.0


class CliError(Exception):
    """A problem the person can fix: printed as ``error: message`` plus detail lines."""

    def __init__(self, message: str, *, details: list[str] | None = None, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.code = code


class Interrupted(Exception):
    """Ctrl-C while following a run; the run itself goes on."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def exit_code(status: str) -> int:
    return EXIT_CODES.get(RunStatus(status), EXIT_FAILED)


def interrupted_hint(run_id: str) -> list[str]:
    return [
        f"stopped following run {run_id}; it is durable and goes on when a worker runs.",
        f"  watch it:   toolweave runs watch {run_id}",
        f"  cancel it:  toolweave runs cancel {run_id}",
        "  run it:     toolweave worker      (or any `toolweave run ... --wait`)",
    ]


# --- opening the app -----------------------------------------------------------------------------


def open_app(definitions: list[Path] | None = None, **overrides: Any) -> App:
    """An ``App`` from the environment (``TOOLWEAVE_*``, ``toolweave.toml``), with extra definitions."""
    from toolweave.app import App
    from toolweave.settings import Settings

    try:
        settings = Settings.load(**overrides)
    except (ValueError, OSError) as exc:
        raise CliError(f"the settings cannot be read: {exc}") from None
    if definitions:
        missing = [str(p) for p in definitions if not p.exists()]
        if missing:
            raise CliError(f"no such definition file or folder: {', '.join(missing)}")
        settings.definitions = [*settings.definitions, *definitions]
    try:
        return App(settings)
    except Exception as exc:
        raise CliError(f"the store at {safe_url(settings.db_url)} cannot be opened: {exc}", code=EXIT_FAILED) from None


def safe_url(url: str) -> str:
    """A database URL with its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


@contextlib.asynccontextmanager
async def app_session(definitions: list[Path] | None = None, **overrides: Any) -> AsyncIterator[App]:
    app = open_app(definitions, **overrides)
    try:
        yield app
    finally:
        await app.aclose()


# --- inputs ----------------------------------------------------------------------------------------


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    """``-i key=value`` options → a mapping; every malformed one is reported at once."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"-i {pair!r}: write it as key=value (or key=@file)")
        elif key in out:
            problems.append(f"-i {key}: given twice")
        else:
            out[key] = value
    if problems:
        raise CliError("the inputs are malformed", details=problems)
    return out


def read_at_files(
    app: App, target_id: str, raw: dict[str, str], version: str | None = None
) -> tuple[dict[str, Any], bool]:
    """Resolve ``key=@file`` values: a media input gets the local file, any other input its text.

    Returns the inputs and whether local paths were given (``allow_local_paths``).
    """
    job = app.job_for(target_id, version)
    media = {p.name for p in job.input_schema if p.type.is_media}
    out: dict[str, Any] = {}
    problems: list[str] = []
    paths = False
    for key, value in raw.items():
        if not value.startswith("@"):
            out[key] = value
            continue
        path = Path(value[1:]).expanduser()
        if not path.is_file():
            problems.append(f"{key}: no such file: {value[1:]}")
            continue
        if key in media:
            out[key] = str(path.resolve())
            paths = True
        else:
            try:
                out[key] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{key}: cannot read {value[1:]} as text: {exc}")
    if problems:
        raise CliError("some inputs cannot be read", details=problems)
    return out, paths


async def submit(app: App, target_id: str, pairs: list[str], account: str, version: str | None = None) -> str:
    """Submit a run of a tool or job (in ``version``, default the latest) from ``-i`` options;
    input problems become ``CliError`` (exit 4)."""
    from toolweave.app import MediaError, UnknownDefinition
    from toolweave.inputs import InputError

    raw = parse_pairs(pairs)
    try:
        inputs, paths = read_at_files(app, target_id, raw, version)
        await app.ensure_account(account)
        return await app.submit(
            target_id, inputs, account_id=account, origin={"platform": "cli"}, coerce_text=True,
            allow_local_paths=paths, version=version,
        )
    except UnknownDefinition as exc:
        raise CliError(f"{exc.args[0]} (see `toolweave tools list` and `toolweave jobs list`)") from None
    except InputError as exc:
        raise CliError(
            f"the inputs of {target_id} are not valid", details=[f"{p.field}: {p.message}" for p in exc.problems]
        ) from None
    except MediaError as exc:
        raise CliError(f"a media input cannot be read: {exc}") from None


# --- following a run -------------------------------------------------------------------------------


class _SigintCatcher:
    """Turn Ctrl-C into an event while following a run (the default handler elsewhere)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._installed = False

    def __enter__(self) -> _SigintCatcher:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, self.event.set)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)


class InProcessWorker:
    """A worker in this process, started when no other worker is alive, stopped gracefully."""

    def __init__(self, app: App, slots: int | None = None) -> None:
        self.app = app
        self.slots = slots
        self.task: asyncio.Task[None] | None = None
        self.worker: Any = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        if self.running:
            return
        self.worker = self.app.make_worker(self.slots)
        self.task = asyncio.create_task(self.app.run_worker(self.worker, kind="cli"), name="toolweave-cli-worker")

    async def ensure(self, policy: str) -> None:
        """``always``: run one; ``auto``: run one when no worker is alive; ``never``: don't."""
        if self.running or policy == "never":
            return
        if policy == "always" or not await self.app.live_workers():
            self.start()

    async def stop(self, grace: float = 30.0) -> None:
        if self.task is None:
            return
        self.worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        except Exception:  # the worker's own failure was logged; the run state is in the store
            pass


async def follow(
    app: App,
    run_id: str,
    account: str,
    console: Console,
    *,
    worker: str = "auto",
    view: str = "auto",
    slots: int | None = None,
    after: int = 0,
) -> dict[str, Any]:
    """Follow a run until it ends and return its final detail.

    ``worker``: ``auto`` runs an in-process worker whenever no live worker is announced (checked
    again every few seconds), ``always``/``never`` as named. ``view``: ``live`` (a table redrawn in
    place), ``lines`` (one line per event), ``quiet``; ``auto`` picks ``live`` on a terminal.
    Events are printed from after event id ``after``. Ctrl-C raises ``Interrupted`` after
    stopping the in-process worker; the run goes on.
    """
    if view == "auto":
        view = "live" if console.is_terminal else "lines"
    own = InProcessWorker(app, slots)
    last_event = after
    started = time.monotonic()
    with _SigintCatcher() as sigint:
        await own.ensure(worker)
        next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
        live: Live | None = None
        try:
            run = await app.get_run(run_id, account)
            if view == "live":
                live = Live(render_progress(run, started), console=console, refresh_per_second=8, transient=True)
                live.start()
            while True:
                events = await app.events(run_id, account, last_event)
                if events:
                    last_event = events[-1]["id"]
                    if view == "lines":
                        for event in events:
                            console.print(event_line(event), highlight=False, soft_wrap=True)
                run = await app.get_run(run_id, account)
                if live is not None:
                    live.update(render_progress(run, started))
                if RunStatus(run["status"]).terminal:
                    if view == "lines":  # the last events may have been appended with the status
                        for event in await app.events(run_id, account, last_event):
                            console.print(event_line(event), highlight=False, soft_wrap=True)
                    return run
                if worker == "auto" and time.monotonic() >= next_check:
                    next_check = time.monotonic() + LIVENESS_CHECK_SECONDS
                    await own.ensure(worker)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sigint.event.wait(), POLL_SECONDS)
                if sigint.event.is_set():
                    raise Interrupted(run_id)
        finally:
            if live is not None:
                live.stop()
            await own.stop()


# --- rendering -------------------------------------------------------------------------------------


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
        duration = step.get("durationMs")
        table.add_row(
            Text(step["stepId"]),
            Text(step.get("toolId") or (f"job {step['childRunId']}" if step.get("childRunId") else "-")),
            styled(step["status"]),
            Text(str(step.get("attempt") or 0)),
            *([Text(_progress(step.get("progress")))] if ongoing else []),
            Text(seconds(duration) if duration is not None else _elapsed(step.get("startedAt"), None)
                 if step["status"] == "running" else "-"),
            Text(note),
        )
    return table


def run_header(run: dict[str, Any]) -> Text:
    text = Text()
    text.append(f"run {run['jobRunId']}", style="bold")
    text.append(f"  {run['jobDefinitionId']} v{run['version']}  ")
    text.append_text(styled(run["status"]))
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
        parts.append(event["stepId"])
    if "attempt" in data:
        parts.append(f"attempt {data['attempt']}")
    if event["type"] == "step.retry_scheduled":
        delay = float(data.get("at", event["at"])) - float(event["at"])
        parts.append(f"attempt {data.get('nextAttempt')} in {max(0.0, delay):.2f}s")
    if "progress" in data and data["progress"] is not None:
        parts.append(_progress(data["progress"]))
    if data.get("durationMs") is not None:
        parts.append(seconds(data["durationMs"]))
    if data.get("reason"):
        parts.append(f"({data['reason']})")
    error = data.get("error")
    if error:
        parts.append("— " + (error.get("message", "") if isinstance(error, dict) else str(error)))
    return "  ".join(str(p) for p in parts)


def runs_table(items: list[dict[str, Any]]) -> Table:
    table = _table(f"{len(items)} run{'s' if len(items) != 1 else ''}")
    table.add_column("run", no_wrap=True)
    table.add_column("job", overflow="ellipsis", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    errors = any(item.get("error") for item in items)
    if errors:
        table.add_column("error", overflow="fold", ratio=1)
    for item in items:
        error = item.get("error")
        message = error.get("message", "") if isinstance(error, dict) else (error or "")
        version = "" if item["version"] == "1" else f" v{item['version']}"
        table.add_row(
            Text(item["jobRunId"]),
            Text(f"{item['jobDefinitionId']}{version}"),
            styled(item["status"]),
            Text(_local_time(item.get("createdAt"))),
            Text(seconds(item.get("durationMs"))),
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
        table.add_row(
            Text(gen["stepId"]),
            Text(str(gen.get("attempt"))),
            Text(gen.get("serviceName") or ""),
            styled(gen.get("status")),
            Text(seconds(gen.get("durationMs"))),
            Text(f"${gen['costUsd']}" if gen.get("costUsd") is not None else "-"),
            Text(error.get("message", "") if isinstance(error, dict) else str(error or "")),
        )
    return table


def _artifact_values(value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(suffix, artifact value) for an output that is an artifact or a list of them."""
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
        console.print(Text(f"  {name}: {value!r}"), soft_wrap=True)


def print_error(console: Console, run: dict[str, Any]) -> None:
    error = run.get("error")
    if error:
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        console.print(Text(f"error: {message}", style="red"), soft_wrap=True)


async def summary(
    app: App, run: dict[str, Any], account: str, console: Console, output_dir: Path | None = None
) -> list[tuple[str, str, Path]]:
    """The final view of a run: header, steps, error, output files (exported when asked)."""
    console.print(run_header(run))
    console.print(steps_table(run))
    print_error(console, run)
    files = await output_files(app, run, account, output_dir)
    print_outputs(console, run, files)
    return files


async def show(app: App, run: dict[str, Any], account: str, console: Console) -> None:
    """Everything about one run (``runs show``)."""
    console.print(run_header(run))
    for label, key in (("created", "createdAt"), ("started", "startedAt"), ("finished", "finishedAt")):
        console.print(Text(f"  {label}: {run.get(key) or '-'}"))
    console.print(Text(f"  account: {run.get('masterAccountId')}  origin: {run.get('origin') or {}}"))
    inputs = run.get("jobInputs") or {}
    if inputs:
        console.print(Text("inputs", style="bold"))
        for name, value in inputs.items():
            shown = _describe_artifact(value) if ArtifactRef.is_ref(value) else repr(value)
            console.print(Text(f"  {name}: {shown}"), soft_wrap=True)
    console.print(steps_table(run, title="steps"))
    if run.get("generations"):
        console.print(generations_table(run))
    print_error(console, run)
    print_outputs(console, run, await output_files(app, run, account))
    for note in run.get("notifications") or []:
        console.print(
            Text(f"notification {note['channel']} {note['eventType']}: {note['status']} after "
                 f"{note['attempts']} attempt(s){' — ' + note['lastError'] if note.get('lastError') else ''}"),
            soft_wrap=True,
        )


# --- the demo --------------------------------------------------------------------------------------


def bundled(name: str) -> Path:
    """A file shipped in ``toolweave/data`` (the demo job and its sample image)."""
    path = Path(str(resources.files("toolweave") / "data" / name))
    if not path.is_file():
        raise CliError(f"the packaged file toolweave/data/{name} is missing; reinstall toolweave", code=EXIT_FAILED)
    return path


class FlakyImageServer:
    """The demo's stand-in for a busy image host, on 127.0.0.1: it answers the first request for
    the picture with ``503 Service Unavailable`` and serves it from then on, so the job's retry
    policy is exercised by a real, retryable HTTP failure."""

    def __init__(self, data: bytes, *, failures: int = 1, mime_type: str = "image/png") -> None:
        self.data = data
        self.failures = failures
        self.mime_type = mime_type
        self.requests: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}/{DEMO_IMAGE_FILE}"

    def _answer(self) -> int:
        with self._lock:
            status = 503 if len(self.requests) < self.failures else 200
            self.requests.append(status)
            return status

    def __enter__(self) -> FlakyImageServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = outer._answer()
                body = outer.data if status == 200 else b"busy, try again\n"
                self.send_response(status)
                self.send_header("Content-Type", outer.mime_type if status == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="toolweave-demo-http", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def ensure_demo_job(app: App) -> None:
    """Register the packaged demo job unless the configured definitions already have it."""
    if app.registry.get_job(DEMO_JOB_ID) is not None:
        return
    problems = app.registry.load([bundled(DEMO_JOB_FILE)])
    if problems:
        raise CliError("the packaged demo job does not validate", details=[str(p) for p in problems], code=EXIT_FAILED)


async def run_demo(
    app: App, account: str, console: Console, output_dir: Path, *, view: str = "auto", say: Callable[[str], None]
) -> tuple[dict[str, Any], list[tuple[str, str, Path]], FlakyImageServer]:
    """Run the demo job on the bundled picture, served by a flaky loopback host; export its outputs."""
    ensure_demo_job(app)
    image = bundled(DEMO_IMAGE_FILE).read_bytes()
    with FlakyImageServer(image) as server:
        await app.ensure_account(account)
        run_id = await app.submit(
            DEMO_JOB_ID, {"image": server.url, "label": "toolweave demo"}, account_id=account,
            origin={"platform": "cli", "command": "demo"},
        )
        say(f"run {run_id}: {DEMO_JOB_ID} on {server.url} (a local stand-in for an image host that "
            "answers 503 to the first request)")
        run = await follow(app, run_id, account, console, worker="always", view=view)
    files = await output_files(app, run, account, output_dir)
    return run, files, server


__all__ = [
    "EXIT_CODES",
    "LOCAL_ACCOUNT",
    "CliError",
    "FlakyImageServer",
    "Interrupted",
    "app_session",
    "exit_code",
    "follow",
    "run_demo",
    "submit",
]
