"""``toolweave serve``: the HTTP API, the live event streams and the web page, with an embedded
worker unless told otherwise."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from rich.text import Text

from toolweave.cli.common import CliError, app_from, err_console, exit_with, load_settings

if TYPE_CHECKING:  # asyncio is imported by the command, not with the module: not for --help
    import asyncio

    from toolweave.settings import Settings


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="The port to listen on."),
    workers_in_process: int | None = typer.Option(
        None, "--workers-in-process", min=1, help="Slots of the embedded worker (default: the worker_slots setting)."
    ),
    no_worker: bool = typer.Option(
        False, "--no-worker", help="Run no embedded worker: separate `toolweave worker` processes do the work."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the HTTP API, the live event streams and the web page (with an embedded worker by default)."""
    import asyncio

    import uvicorn

    from toolweave.api import create_app

    settings = load_settings()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def _main() -> None:
        _check_port(host, port)  # before "serving on …", not after it
        tw_app = app_from(settings)
        for problem in tw_app.definition_problems:
            err_console.print(Text(f"warning: {problem}", style="yellow"), soft_wrap=True)
        try:
            api = create_app(tw_app, run_worker=not no_worker, slots=workers_in_process or settings.worker_slots)
            # open event streams end on their own only at their next keep-alive; a stop waits 10 s at most
            config = uvicorn.Config(api, host=host, port=port, log_level=log_level.lower(), proxy_headers=True,
                                    timeout_graceful_shutdown=10, **connection_limits(settings))
            server = uvicorn.Server(config)
            mode = "no embedded worker" if no_worker else f"embedded worker, {workers_in_process or settings.worker_slots} slots"
            err_console.print(Text(f"toolweave serving on http://{host}:{port} ({mode}); data in {settings.home}"))
            _settle_heap()
            await server.serve()
        finally:
            await tw_app.aclose()

    try:
        with asyncio.Runner(loop_factory=_fast_loop()) as runner:
            runner.run(_main())
    except CliError as exc:
        exit_with(exc)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        err_console.print(Text(f"error: cannot serve on {host}:{port}: {exc.strerror or exc}", style="red"))
        raise typer.Exit(1) from None


def connection_limits(settings: Settings) -> dict[str, Any]:
    """What ``uvicorn.Config`` is given to bound connections: the time and size of a request's
    headers (``api.connections``: uvicorn has neither), the idle time after an answer, and the
    connections or requests at once past which it answers 503."""
    from toolweave.api.connections import guarded_protocol

    return {
        "http": guarded_protocol(settings.http_header_timeout_seconds, settings.http_max_header_bytes),
        "h11_max_incomplete_event_size": settings.http_max_header_bytes,
        "timeout_keep_alive": settings.http_keep_alive_seconds,
        "limit_concurrency": settings.http_max_concurrency or None,
    }


def _settle_heap() -> None:
    """Keep what start-up made (modules, definitions, the application) out of the cyclic garbage
    collector's later passes: a pass over the oldest generation walked all of it again and again
    while requests came in (``bench/ingress.py``: a tenth of a submit's CPU). What is garbage now
    is collected first; what lives on stays, as it would anyway."""
    gc.collect()
    gc.freeze()


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (a dependency, but not on every platform);
    asyncio's otherwise. (uvicorn picks its faster HTTP parser, httptools, by itself.)"""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _check_port(host: str, port: int) -> None:
    """Refuse a port something else listens on, in one line (exit 1)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (another process may use it; "
                           f"pick another with --port)", code=1) from None
