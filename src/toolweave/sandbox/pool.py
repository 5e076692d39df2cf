"""A pool of evaluator processes.

``await pool.call("package.module:function", payload, hard_seconds)`` runs ``function(payload)`` in
one of the pool's processes and returns its (picklable) result. The caller's event loop only waits:
the call goes through a thread of the pool's own (one per process), which sends the request down a
pipe and waits for the answer at most ``hard_seconds`` from the moment the function starts — a new
process's start-up, the import of the function's module and the module's ``prepare()`` when it has
one (a process's one-off work: building parsers and environments; seconds of wall time on a busy
machine, at the evaluators' lower priority) are not the evaluation's time; they have
``STARTUP_SECONDS`` of their own.
Past the hard deadline, the process is killed and replaced and ``EvaluationError("evaluation_timeout")``
is raised: nothing a user wrote can hold a
worker, the server's event loop or its memory (each process has an address-space limit; running out
of it is ``EvaluationError("evaluation_memory")``).

The functions called enforce their own CPU budget (``budget.cpu_budget``) and report it in their
result; the hard deadline is the backstop for what a budget cannot interrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger("toolweave.sandbox")

MEMORY_BYTES = 1 << 30
"""Each evaluator process's address-space limit (``RLIMIT_AS``)."""
NICENESS = 10
"""How much lower than its parent an evaluator process is scheduled."""
STARTUP_SECONDS = 120.0
"""How long a call may wait for its evaluator to be ready to run it (a new process started, the
function's module imported) before ``EvaluationError("evaluation_failed")``; not counted in the
call's hard deadline."""


class EvaluationError(Exception):
    """An evaluation that did not give an answer: ``code`` is ``evaluation_timeout``,
    ``evaluation_memory`` or ``evaluation_failed``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def serve(conn: Connection, memory_bytes: int) -> None:
    """An evaluator process: answer requests until the pipe closes. It runs at a lower priority
    than the process it serves: on a busy machine the server's event loop comes first."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    functions: dict[str, tuple[Any, Any]] = {}
    while True:
        try:
            target, payload = conn.recv()
        except (EOFError, OSError):
            return
        try:
            entry = functions.get(target)
            if entry is None:
                module_name, _, name = target.partition(":")
                module = importlib.import_module(module_name)
                entry = functions[target] = (getattr(module, name), getattr(module, "prepare", None))
            function, prepare = entry
            if prepare is not None:
                prepare()  # the process's one-off work (parsers, environments), before the clock starts
            conn.send(("started", None))  # the hard deadline runs from here
            answer: tuple[str, Any] = ("ok", function(payload))
        except MemoryError:
            answer = ("error", ("evaluation_memory", f"needed more than {memory_bytes >> 20} MB of memory"))
        except BaseException as exc:  # a bug or an unexpected input: report it, keep serving
            answer = ("error", ("evaluation_failed", f"{type(exc).__name__}: {exc}"))
        try:
            conn.send(answer)
        except (OSError, ValueError):
            return


class _NotStarted(Exception):
    """The evaluator was not ready to run a call within ``STARTUP_SECONDS``."""


class _Process:
    """One evaluator: ``python -m toolweave.sandbox FD MEMORY`` (a fresh interpreter, not a
    fork of a process with threads, nor a re-run of its main module) on one end of a socket pair."""

    def __init__(self, memory_bytes: int) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "toolweave.sandbox", str(theirs.fileno()), str(memory_bytes)],
            pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Connection(ours.detach())

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, target: str, payload: Any, hard_seconds: float) -> Any:
        self.conn.send((target, payload))
        if not self.conn.poll(STARTUP_SECONDS):
            raise _NotStarted
        status, value = self.conn.recv()
        if status == "started":
            if not self.conn.poll(hard_seconds):
                raise TimeoutError
            status, value = self.conn.recv()
        if status == "ok":
            return value
        code, message = value
        raise EvaluationError(code, message)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


class EvaluationPool:
    def __init__(self, processes: int = 2, *, memory_bytes: int = MEMORY_BYTES) -> None:
        self.size = max(1, processes)
        self.memory_bytes = memory_bytes
        self._idle: list[_Process] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="toolweave-evaluate")
        self._closed = False
        self.started = 0
        """How many evaluator processes this pool has started (they start on a first call, not before)."""

    async def call(self, target: str, payload: Any, hard_seconds: float) -> Any:
        """``target(payload)`` in an evaluator process; ``EvaluationError`` when it gives no answer."""
        if self._closed:
            raise EvaluationError("evaluation_failed", "the evaluator pool is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, target, payload, hard_seconds)

    def _call(self, target: str, payload: Any, hard_seconds: float) -> Any:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or not worker.alive():
            worker = _Process(self.memory_bytes)
            with self._lock:
                self.started += 1
        try:
            result = worker.call(target, payload, hard_seconds)
        except TimeoutError:
            log.warning("an evaluation of %s ran past %.1f s; its process is replaced", target, hard_seconds)
            worker.stop()
            raise EvaluationError(
                "evaluation_timeout", f"was stopped after {hard_seconds:g} s without an answer"
            ) from None
        except _NotStarted:
            log.warning("an evaluator was not ready to run %s within %.0f s; its process is replaced", target,
                        STARTUP_SECONDS)
            worker.stop()
            raise EvaluationError(
                "evaluation_failed", f"the evaluator process was not ready within {STARTUP_SECONDS:g} s"
            ) from None
        except (EOFError, OSError, BrokenPipeError):
            worker.stop()
            raise EvaluationError("evaluation_failed", "the evaluator process stopped") from None
        except EvaluationError:
            self._keep(worker)
            raise
        self._keep(worker)
        return result

    def _keep(self, worker: _Process) -> None:
        with self._lock:
            if self._closed:
                worker.stop()
            else:
                self._idle.append(worker)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str]) -> None:
    """The evaluator process (``python -m toolweave.sandbox FD MEMORY_BYTES``)."""
    serve(Connection(int(argv[0])), int(argv[1]))
