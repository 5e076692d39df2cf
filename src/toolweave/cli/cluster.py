"""``toolweave cluster``: one command that runs ``toolweave serve --no-worker`` and N ``toolweave
worker`` processes on this machine, restarts any that dies, and stops them all on SIGTERM or
Ctrl-C; on Linux they also stop if the cluster process itself is killed. Every process reads the same settings (environment, ``toolweave.toml``), so they share the
store: PostgreSQL for a real deployment (docs/deploy.md), SQLite on one machine."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from toolweave.cli.common import count, err_console

if TYPE_CHECKING:  # asyncio is imported by the commands, not with the module: not for --help
    import asyncio

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the child SIGTERM when the cluster process dies (even
    by SIGKILL), so that no worker outlives its supervisor; None where there is no ``prctl``. The
    libc function is looked up here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the cluster died before the signal was set
            os._exit(1)

    return set_death_signal


RESTART_PAUSE_SECONDS = 1.0
"""How long after a process died it is started again (doubling while it keeps dying at once, up to 30 s)."""
STOP_GRACE_SECONDS = 30.0


class _Child:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.process: asyncio.subprocess.Process | None = None
        self.pause = RESTART_PAUSE_SECONDS
        self.started_at = 0.0

    async def start(self) -> None:
        import asyncio

        self.started_at = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        err_console.print(f"cluster: {self.name} started (pid {self.process.pid})", highlight=False)

    async def relay(self) -> None:
        """Print the child's output, each line prefixed with its name."""
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            sys.stderr.write(f"{self.name:>9} | {line.decode(errors='replace')}")
            sys.stderr.flush()


async def _supervise(children: list[_Child], stopping: asyncio.Event) -> int:
    import asyncio

    async def keep(child: _Child) -> None:
        while not stopping.is_set():
            await child.start()
            assert child.process is not None
            relay = asyncio.create_task(child.relay())
            code = await child.process.wait()
            await relay
            if stopping.is_set():
                return
            lived = time.monotonic() - child.started_at
            child.pause = RESTART_PAUSE_SECONDS if lived > 60 else min(30.0, child.pause * 2)
            err_console.print(
                f"cluster: {child.name} exited ({code}) after {lived:.0f} s; starting it again in {child.pause:.0f} s",
                highlight=False,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), child.pause)

    keepers = [asyncio.create_task(keep(child)) for child in children]
    await stopping.wait()
    err_console.print("cluster: stopping (the workers finish what they hold)", highlight=False)
    for child in children:
        if child.process is not None and child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*keepers), STOP_GRACE_SECONDS)
    except TimeoutError:
        for child in children:
            if child.process is not None and child.process.returncode is None:
                err_console.print(f"cluster: {child.name} did not stop in time; killing it", highlight=False)
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
        await asyncio.gather(*keepers, return_exceptions=True)
    return 0


def cluster_command(
    workers: int = typer.Option(2, "--workers", min=0, help="Worker processes."),
    slots: int | None = typer.Option(None, "--slots", min=1, show_default=False, help="Slots of each worker (default: the worker_slots setting)."),
    host: str = typer.Option("127.0.0.1", "--host", help="The address the API listens on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="The API's port."),
    no_serve: bool = typer.Option(False, "--no-serve", help="Workers only (the API runs elsewhere)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run the API (`serve --no-worker`) and N worker processes on this machine; restart any that
    dies; SIGTERM or Ctrl-C stops them all, the workers finishing what they hold."""
    import asyncio

    me = [sys.executable, "-m", "toolweave.cli"]
    children: list[_Child] = []
    if not no_serve:
        children.append(_Child("serve", [*me, "serve", "--no-worker", "--host", host, "--port", str(port),
                                         "--log-level", log_level]))
    for index in range(workers):
        argv = [*me, "worker", "--log-level", log_level.upper()]
        if slots:
            argv += ["--slots", str(slots)]
        children.append(_Child(f"worker-{index + 1}", argv))
    if not children:
        raise typer.BadParameter("nothing to run: give --workers, or drop --no-serve")

    async def main() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stopping.set)
        err_console.print(
            f"cluster: {'the API on http://' + host + ':' + str(port) + ' and ' if not no_serve else ''}"
            f"{count(workers, 'worker')}; SIGTERM or Ctrl-C stops them all",
            highlight=False,
        )
        return await _supervise(children, stopping)

    raise typer.Exit(asyncio.run(main()))
