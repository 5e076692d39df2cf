"""What every command of the command line shares: the consoles, settings loading, opening the
``App``, exit codes and ``CliError``, and running a command's coroutine.

The commands talk to the ``App`` facade only. The app (store, services) is imported when a command
needs it, so ``--help`` stays fast. Problems a person can fix leave as ``CliError`` (a message,
detail lines and an exit code), never as a traceback.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from toolweave.model.status import RunStatus
from toolweave.settings import Settings

if TYPE_CHECKING:
    from toolweave.app import App

# soft_wrap: a line is never broken at the terminal's width (80 columns when piped); a refusal
# stays one line that grep and logs see whole. Tables still fit themselves to the width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JSON_HELP = "Print JSON instead of text."
PATHS_OPTION_HELP = "Definition files or folders (default: the configured definition folders)."
ACCOUNT_HELP = "The account to act as (the command line is the local operator, 'local')."
VIEW_HELP = "How to show progress: auto (live table on a terminal, event lines otherwise), live, lines, quiet."

LOCAL_ACCOUNT = "local"
"""The account the command line acts as (the local operator), unless ``--account`` says otherwise."""

# exit codes: 0 completed, 1 failed, 2 partially completed, 3 cancelled, 4 refused (unknown name
# or id, bad inputs), 5 waiting for your answer (a step asks), 130 interrupted (the run goes on)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_PARTIAL = 2
EXIT_CANCELLED = 3
EXIT_REFUSED = 4
EXIT_WAITING = 5
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    RunStatus.COMPLETED: EXIT_OK,
    RunStatus.PARTIALLY_COMPLETED: EXIT_PARTIAL,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.CANCELLED: EXIT_CANCELLED,
    RunStatus.WAITING_INPUT: EXIT_WAITING,
}


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


def count(n: int, noun: str) -> str:
    """``1 job``, ``2 jobs``: a number and its noun, in the plural when it is not one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def exit_code(status: str) -> int:
    return EXIT_CODES.get(RunStatus(status), EXIT_FAILED)


def interrupted_hint(run_id: str) -> list[str]:
    return [
        f"stopped following run {run_id}; it is durable and goes on when a worker runs.",
        f"  watch it:   toolweave runs watch {run_id}",
        f"  cancel it:  toolweave runs cancel {run_id}",
        "  run it:     toolweave worker      (or any `toolweave run ... --wait`)",
    ]


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def load_settings(**overrides: Any) -> Settings:
    """The settings (``TOOLWEAVE_*``, ``toolweave.toml``); unreadable ones are a one-line error, exit 4."""
    try:
        return Settings.load(**overrides)
    except (ValueError, OSError) as exc:
        err_console.print(Text(f"error: the settings cannot be read: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(EXIT_REFUSED) from None


def run_main(main: Coroutine[Any, Any, int]) -> None:
    """Run a command's coroutine; turn CliError and Ctrl-C into messages and exit codes."""
    import asyncio  # here, not with the module: --help runs no coroutine

    try:
        code = asyncio.run(main)
    except CliError as exc:
        exit_with(exc)
    except Interrupted as exc:
        for line in interrupted_hint(exc.run_id):
            err_console.print(Text(line), soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    raise typer.Exit(code or 0)


def exit_with(exc: CliError) -> NoReturn:
    """Print a ``CliError`` (``error: message`` and its detail lines) and exit with its code."""
    err_console.print(Text(f"error: {exc.message}", style="red"), soft_wrap=True)
    for line in exc.details:
        err_console.print(Text(f"  {line}"), soft_wrap=True)
    raise typer.Exit(exc.code) from None


def check_view(view: str, json_output: bool) -> str:
    """The ``--view`` option, checked; ``--json`` silences progress."""
    if view not in ("auto", "live", "lines", "quiet"):
        raise CliError(f"--view must be auto, live, lines or quiet, not {view!r}")
    return "quiet" if json_output else view


def check_worker_policy(worker: str) -> None:
    if worker not in ("auto", "always", "never"):
        raise CliError(f"--worker must be auto, always or never, not {worker!r}")


# --- opening the app -----------------------------------------------------------------------------


def open_app(definitions: list[Path] | None = None, **overrides: Any) -> App:
    """An ``App`` from the environment (``TOOLWEAVE_*``, ``toolweave.toml``), with extra definitions."""

    try:
        settings = Settings.load(**overrides)
    except (ValueError, OSError) as exc:
        raise CliError(f"the settings cannot be read: {exc}") from None
    if definitions:
        missing = [str(p) for p in definitions if not p.exists()]
        if missing:
            raise CliError(f"no such definition file or folder: {', '.join(missing)}")
        settings.definitions = [*settings.definitions, *definitions]
    return app_from(settings)


def app_from(settings: Settings) -> App:
    """An ``App`` on ``settings``; a store that cannot be opened is one line (``CliError``, exit 1)."""
    from toolweave.app import App

    try:
        return App(settings)
    except Exception as exc:
        raise CliError(f"the store at {safe_url(settings.db_url)} cannot be opened: {one_line(exc)}",
                       code=EXIT_FAILED) from None


def one_line(exc: BaseException) -> str:
    """An exception's message without the driver's SQL, parameters and "Background on this error" link."""
    text = str(exc).split("\n(Background on this error", 1)[0]
    text = text.split("\n[SQL:", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def safe_url(url: str) -> str:
    """A database URL with its password hidden."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url.split("@")[-1]


@contextlib.asynccontextmanager
async def app_session(definitions: list[Path] | None = None, **overrides: Any) -> AsyncIterator[App]:
    app = open_app(definitions, **overrides)
    try:
        yield app
    finally:
        await app.aclose()


def with_app(fn: Any) -> Any:
    """Run ``await fn(app)`` with an ``App`` from the settings (unreadable settings: exit 2; a
    store that cannot be reached: one line, exit 1)."""
    import asyncio

    from sqlalchemy.exc import DBAPIError

    async def _main() -> Any:
        tw_app = app_from(load_settings())
        try:
            return await fn(tw_app)
        except DBAPIError as exc:
            raise CliError(f"the store at {safe_url(tw_app.settings.db_url)} failed: {one_line(exc)}",
                           code=EXIT_FAILED) from None
        finally:
            await tw_app.aclose()

    try:
        return asyncio.run(_main())
    except CliError as exc:
        exit_with(exc)
