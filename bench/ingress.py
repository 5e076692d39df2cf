"""What one ``toolweave serve`` takes in: backend webhooks, submissions, idle event streams.

    python bench/ingress.py --what webhooks --store sqlite --json
    python bench/ingress.py --what submits --store postgres --clients 50 --json
    python bench/ingress.py --what batch --n 20000 --clients 4 --json
    python bench/ingress.py --what sse --streams 200 --seconds 20 --json

One ``toolweave serve --no-worker`` process (uvicorn, as shipped) on a fresh store; this process is
the load: ``--clients`` keep-alive HTTP/1.1 connections (a small client on raw sockets, so that the
load costs less CPU than what it measures), each sending its next request when the last was
answered.

- ``webhooks``: ``--runs`` runs of ``test.slow_async`` are parked first (a generation waiting on
  the stand-in backend, worked by a worker in this process that then stops). Then ``--progress``
  progress webhooks per generation (rising progress, each with its own event id), then one
  ``completed`` webhook each; the two phases are timed apart (``progress_per_s``,
  ``terminal_per_s``). Each completion ends its run (the planner runs, the run is finished).
- ``submits``: ``--n`` ``POST /api/v1/runs`` of ``test.instant`` with an API key; no worker runs,
  so this is the intake alone.
- ``batch``: ``--n`` runs of ``test.instant`` through ``POST /api/v1/runs/batch``, ``--items`` per
  request, each item with its own idempotency key; ``runs_per_s`` is the figure.
- ``sse``: ``--streams`` event streams of runs that stay parked, open for ``--seconds``: the CPU
  they cost the server process (and PostgreSQL's backends for the benchmark's database) as a share
  of one core, while nothing happens.

Reported: requests per second, latency p50/p99 (ms), failures (non-2xx), the server's CPU per
request and, on PostgreSQL, the server processes' CPU per request (``procstat.PgBackends``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import PG_ADMIN, create_pg_database, drop_pg_database, percentile
from procstat import PgBackends, cpu_seconds, positive

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from toolweave.app import App  # noqa: E402
from toolweave.settings import Settings  # noqa: E402


class Connection:
    """One keep-alive HTTP/1.1 connection: a request out, its answer back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> int:
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


async def load(port: int, requests: list[list[tuple[str, str, bytes, str]]]) -> dict[str, Any]:
    """Send each list of requests down a connection of its own, one after the other."""
    latencies: list[float] = []
    failures = 0

    async def client(queue: list[tuple[str, str, bytes, str]]) -> None:
        nonlocal failures
        conn = await Connection.open(port)
        try:
            for method, path, body, headers in queue:
                started = time.perf_counter()
                status = await conn.request(method, path, body, headers)
                latencies.append(time.perf_counter() - started)
                if status >= 300:
                    failures += 1
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(q) for q in requests if q))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "failures": failures,
        "elapsed_s": round(elapsed, 3),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(home: Path, url: str | None, port: int, profile: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWEAVE_")}
    env.update(TOOLWEAVE_HOME=str(home), TOOLWEAVE_TEST_TOOLS="1", PYTHONPATH=str(ROOT / "src"))
    if url:
        env["TOOLWEAVE_DATABASE_URL"] = url
    command = [sys.executable, "-m", "toolweave.cli", "serve", "--no-worker", "--port", str(port), "--log-level", "warning"]
    if profile:  # py-spy samples the server (its CPU figures then include py-spy's own)
        command = ["py-spy", "record", "--gil", "--rate", "250", "--format", "raw", "-o", profile, "--", *command]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("toolweave serve did not start")


async def park(app: App, runs: int) -> list[tuple[str, str]]:
    """Runs of test.slow_async waiting on the stand-in backend: (generation id, platform run id)."""
    for item in await app.submit_many("test.slow_async", [{"seconds": 86400}] * runs, account_id="bench"):
        assert item.run_id is not None, item.error
    worker = app.make_worker(32, sweep_seconds=0)
    task = asyncio.create_task(worker.run())

    def parked(tx: Any) -> list[Any]:
        return tx.all("SELECT generation_id, platform_specific_run_id FROM generations WHERE status = 'processing'")

    while len(rows := await app.store.read(parked)) < runs:
        await asyncio.sleep(0.1)
    worker.stop()
    await task
    return [(r.generation_id, r.platform_specific_run_id) for r in rows]


async def bench(args: argparse.Namespace, home: Path, url: str | None, pg_name: str | None) -> dict[str, Any]:
    app = App(Settings(home=home, database_url=url, test_tools=True))
    _, key = await app.create_key("bench", "ingress benchmark")
    auth = f"Authorization: Bearer {key}\r\n"
    parked = await park(app, args.runs) if args.what in ("webhooks", "sse") else []
    port = free_port()
    serve = start_serve(home, url, port, args.profile)
    backends = PgBackends(PG_ADMIN, pg_name) if pg_name else None
    result: dict[str, Any] = {"what": args.what, "store": args.store, "clients": args.clients}

    def cpu_mark() -> float:
        if backends is not None:
            backends.sample()
        return cpu_seconds(serve.pid)

    try:
        if args.what == "webhooks":
            lanes: list[list[tuple[str, str, bytes, str]]] = [[] for _ in range(args.clients)]
            finals: list[list[tuple[str, str, bytes, str]]] = [[] for _ in range(args.clients)]
            for index, (gen_id, platform_id) in enumerate(parked):
                path = f"/webhooks/builtin/{gen_id}?token={app.engine.webhook_token('builtin', gen_id)}"
                lane = index % args.clients
                for step in range(1, args.progress + 1):
                    body = {"runId": platform_id, "status": "processing", "progress": step / (args.progress + 1),
                            "eventId": f"{gen_id}-{step}"}
                    lanes[lane].append(("POST", path, json.dumps(body).encode(), ""))
                done = {"runId": platform_id, "status": "completed", "outputs": {"waited": 1}, "eventId": f"{gen_id}-done"}
                finals[lane].append(("POST", path, json.dumps(done).encode(), ""))
            for name, work in (("progress", lanes), ("terminal", finals)):
                before = cpu_mark()
                pg_before = backends.cpu_seconds() if backends else 0.0
                measured = await load(port, work)
                spent = cpu_mark() - before
                result[name] = {**measured, "server_cpu_ms_per_request": round(spent * 1000 / measured["requests"], 3)}
                if backends is not None:
                    result[name]["postgres_cpu_ms_per_request"] = round(
                        (backends.cpu_seconds() - pg_before) * 1000 / measured["requests"], 3)
        elif args.what == "batch":
            lanes = [[] for _ in range(args.clients)]
            for number, first in enumerate(range(0, args.n, args.items)):
                items = [{"inputs": {"value": i}, "idempotencyKey": f"row-{i}"}
                         for i in range(first, min(args.n, first + args.items))]
                body = json.dumps({"toolId": "test.instant", "items": items}).encode()
                lanes[number % args.clients].append(("POST", "/api/v1/runs/batch", body, auth))
            before = cpu_mark()
            pg_before = backends.cpu_seconds() if backends else 0.0
            measured = await load(port, lanes)
            spent = cpu_mark() - before
            result["batch"] = {**measured, "runs_per_s": round(args.n / measured["elapsed_s"], 1),
                               "server_cpu_ms_per_run": round(spent * 1000 / args.n, 3)}
            if backends is not None:
                result["batch"]["postgres_cpu_ms_per_run"] = round((backends.cpu_seconds() - pg_before) * 1000 / args.n, 3)
            created = await app.store.read(lambda tx: tx.one("SELECT COUNT(*) AS n FROM runs").n)
            result["batch"]["runs_stored"] = int(created)
        elif args.what == "submits":
            lanes = [[] for _ in range(args.clients)]
            for i in range(args.n):
                body = json.dumps({"toolId": "test.instant", "inputs": {"value": i}}).encode()
                lanes[i % args.clients].append(("POST", "/api/v1/runs", body, auth))
            before = cpu_mark()
            pg_before = backends.cpu_seconds() if backends else 0.0
            measured = await load(port, lanes)
            spent = cpu_mark() - before
            result["submits"] = {**measured, "server_cpu_ms_per_request": round(spent * 1000 / measured["requests"], 3)}
            if backends is not None:
                result["submits"]["postgres_cpu_ms_per_request"] = round(
                    (backends.cpu_seconds() - pg_before) * 1000 / measured["requests"], 3)
        else:  # sse
            run_ids = await app.store.read(lambda tx: [r.run_id for r in tx.all("SELECT run_id FROM runs")])
            streams = []
            for i in range(args.streams):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET /api/v1/runs/{run_ids[i % len(run_ids)]}/events HTTP/1.1\r\nHost: bench\r\n"
                             f"{auth}\r\n".encode())
                streams.append((reader, writer))
            for reader, _ in streams:
                await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(2.0)  # every stream has read its backlog
            before, started = cpu_mark(), time.perf_counter()
            pg_before = backends.cpu_seconds() if backends else 0.0
            await asyncio.sleep(args.seconds)
            spent, elapsed = cpu_mark() - before, time.perf_counter() - started
            result["sse"] = {"streams": args.streams, "seconds": round(elapsed, 1),
                             "server_cpu_share_of_a_core": round(spent / elapsed, 4)}
            if backends is not None:
                result["sse"]["postgres_cpu_share_of_a_core"] = round((backends.cpu_seconds() - pg_before) / elapsed, 4)
            for _, writer in streams:
                writer.close()
    finally:
        if args.profile:
            serve.send_signal(signal.SIGINT)  # py-spy writes its samples and stops the server
        else:
            serve.terminate()
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)
        if backends is not None:
            backends.close()
        await app.aclose()
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=["webhooks", "submits", "batch", "sse"], required=True)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=positive, default=50, help="concurrent connections")
    parser.add_argument("--runs", type=positive, default=500, help="parked runs (webhooks, sse)")
    parser.add_argument("--progress", type=positive, default=4, help="progress webhooks per generation")
    parser.add_argument("--n", type=positive, default=5000, help="submissions")
    parser.add_argument("--items", type=positive, default=500, help="runs per batch request")
    parser.add_argument("--streams", type=positive, default=200)
    parser.add_argument("--seconds", type=positive, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the server under `py-spy record --gil` and write its samples (collapsed stacks) to FILE")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="toolweave-ingress-"))
    url, pg_name = create_pg_database() if args.store == "postgres" else (None, None)
    try:
        result = asyncio.run(bench(args, home, url, pg_name))
    finally:
        if pg_name:
            drop_pg_database(pg_name)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>10}: {value}")


if __name__ == "__main__":
    main()
