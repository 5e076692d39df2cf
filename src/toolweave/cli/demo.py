"""``toolweave demo``: the bundled demo job, run offline against a flaky image host on loopback
(parallel branches, a condition, a retry after a real 503, a contact sheet)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from toolweave.cli.common import (
    ACCOUNT_HELP,
    EXIT_FAILED,
    LOCAL_ACCOUNT,
    VIEW_HELP,
    CliError,
    app_session,
    check_view,
    console,
    exit_code,
    run_main,
)
from toolweave.cli.render import output_files, print_error, run_header, steps_table
from toolweave.settings import Settings

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from toolweave.app import App

DEMO_JOB_FILE = "demo_variants.yaml"
DEMO_JOB_ID = "demo_variants"
DEMO_IMAGE_FILE = "sample.png"


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
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # (only the demo serves)

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
    from toolweave.cli.following import follow  # (asyncio: not for --help)

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


def demo_command(
    output: Path = typer.Option(Path("demo-output"), "--output", "-o", help="Where to copy the output images."),
    account: str = typer.Option(LOCAL_ACCOUNT, "--account", help=ACCOUNT_HELP),
    view: str = typer.Option("auto", "--view", metavar="MODE", help=VIEW_HELP),
) -> None:
    """Run the bundled demo job offline: parallel branches, a condition, a retry and a contact sheet."""

    folder = output.resolve()

    async def main() -> int:
        shown = check_view(view, False)
        # the demo's image host is on loopback, which user-given URLs may not reach: the demo runs
        # in a data folder of its own, where that is allowed, so no other run gets the exemption
        home = Settings.load().home / "demo"
        async with app_session(home=home, media_allow_private_urls=True) as tw:
            console.print(
                f"toolweave demo — data folder {tw.settings.home} (under TOOLWEAVE_HOME)", highlight=False
            )
            run, files, server = await run_demo(
                tw, account, console, folder, view=shown, say=lambda line: console.print(line, highlight=False)
            )
            console.print(run_header(run))
            console.print(steps_table(run))
            print_error(console, run)
            retries = sum(max(0, int(s.get("attempt") or 1) - 1) for s in run.get("stepStatuses") or [])
            console.print(
                f"the image host answered {', '.join(str(s) for s in server.requests)}; "
                f"{retries} retr{'y' if retries == 1 else 'ies'} needed",
                highlight=False,
            )
            if files:
                console.print(Text(f"output files (in {folder})", style="bold"))
                for name, description, path in files:
                    console.print(f"  {name}: {path}  ({description})", highlight=False, soft_wrap=True)
            console.print(f"details: TOOLWEAVE_HOME={home} toolweave runs show {run['jobRunId']}", highlight=False)
            return exit_code(run["status"])

    run_main(main())
