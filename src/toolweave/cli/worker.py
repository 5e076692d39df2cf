"""``toolweave worker``: a worker process, stopped gracefully by SIGTERM or Ctrl-C."""

from __future__ import annotations

import logging
import signal

import typer

from toolweave.cli.common import CliError, app_session, count, err_console, run_main, safe_url


def worker_command(
    slots: int | None = typer.Option(None, "--slots", min=1, metavar="N", show_default=False,
                                     help="Tasks handled at once (default: the worker_slots setting, 8)."),
    until_idle: bool = typer.Option(False, "--until-idle", help="Exit when no task is due or in flight."),
    timeout: float = typer.Option(600.0, "--timeout", help="With --until-idle: give up after this many seconds."),
    log_level: str = typer.Option("info", "--log-level", metavar="LEVEL", help="debug, info, warning or error (any case)."),
) -> None:
    """Run a worker until SIGTERM or Ctrl-C (it finishes the tasks in hand, then hands back the rest)."""
    import asyncio  # (in the command, not with the module: not for --help)

    async def main() -> int:
        level = getattr(logging, log_level.upper(), None)
        if not isinstance(level, int):
            raise CliError(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}")
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        async with app_session() as tw:
            w = tw.make_worker(slots or None)
            where = safe_url(tw.settings.db_url)
            if until_idle:
                await w.run_until_idle(timeout)
                err_console.print(f"worker {w.worker_id}: idle after {count(w.handled, 'task')}", highlight=False)
                return 0
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, w.stop)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
            err_console.print(
                f"worker {w.worker_id}: {count(w.slots, 'slot')} on {where}; SIGTERM or Ctrl-C stops it", highlight=False
            )
            try:
                await tw.run_worker(w, kind="worker")
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    try:
                        loop.remove_signal_handler(sig)
                    except (NotImplementedError, RuntimeError, ValueError):
                        pass
            err_console.print(f"worker {w.worker_id}: stopped after {count(w.handled, 'task')}", highlight=False)
        return 0

    run_main(main())
