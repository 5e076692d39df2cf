"""``toolweave cluster``: the API and N workers as real processes on one store (both kinds); a
worker that dies is started again; SIGTERM stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from toolweave.app import App
from toolweave.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: object, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()  # type: ignore[operator]
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_cluster_serves_works_restarts_a_dead_worker_and_stops_on_sigterm(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("TOOLWEAVE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "TOOLWEAVE_HOME": str(tmp_path / "home"), "TOOLWEAVE_DATABASE_URL": db_url,
           "TOOLWEAVE_TEST_TOOLS": "1", "TOOLWEAVE_ADMIN_KEY": "tw_admin_cluster_test_0123456789"}
    port = free_port()
    log = (tmp_path / "cluster.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "toolweave.cli", "cluster", "--workers", "2", "--slots", "4", "--port", str(port),
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            async def healthy() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(healthy, 60, "the API")

        async def workers() -> list[dict[str, object]]:
            live = [w for w in await app.live_workers() if w["kind"] == "worker"]
            return live if len(live) == 2 else []

        first = await eventually(workers, 60, "two workers")
        run_id = await app.submit("test.instant", {"value": 41}, account_id="acme")
        run = await app.wait(run_id, timeout=60)
        assert run["status"] == "completed" and run["finalOutputs"]["value"] == 42

        victim = int(first[0]["pid"])  # type: ignore[index, call-overload]
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> list[dict[str, object]]:
            live = [w for w in await app.live_workers() if w["kind"] == "worker" and w["pid"] != victim]
            return live if len(live) == 2 else []

        now = await eventually(replaced, 60, "the dead worker's replacement")
        pids = [int(w["pid"]) for w in now]  # type: ignore[call-overload]
        assert victim not in pids

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0, (tmp_path / "cluster.log").read_text()
        assert not any(alive(pid) for pid in pids)
        # the workers that stopped took their presence with them (the killed one's lapses on its own)
        assert [w for w in await app.live_workers() if w["kind"] == "worker" and w["pid"] != victim] == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
        await app.aclose()


async def test_the_workers_stop_when_the_cluster_process_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor killed by SIGKILL cannot stop its children: Linux does (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the death signal is Linux's")
    for key in list(os.environ):
        if key.startswith("TOOLWEAVE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    db_url = f"sqlite:///{tmp_path / 'toolweave.db'}"
    env = {**os.environ, "TOOLWEAVE_HOME": str(tmp_path / "home"), "TOOLWEAVE_DATABASE_URL": db_url,
           "TOOLWEAVE_TEST_TOOLS": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "toolweave.cli", "cluster", "--no-serve", "--workers", "2", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    app = App(Settings(home=tmp_path / "home", database_url=db_url, test_tools=True))
    try:
        async def workers() -> list[dict[str, object]]:
            live = [w for w in await app.live_workers() if w["kind"] == "worker"]
            return live if len(live) == 2 else []

        pids = [int(w["pid"]) for w in await eventually(workers, 60, "two workers")]  # type: ignore[attr-defined, call-overload]
        proc.kill()
        await proc.wait()

        async def gone() -> bool:
            return not any(alive(pid) for pid in pids)

        await eventually(gone, 60, "the workers to stop")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await app.aclose()
