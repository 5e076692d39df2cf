"""The notification outbox after an outage: what does delivering a backlog cost per row?

    python bench/outbox.py --rows 1000 10000 --sample 1000 --json
    python bench/outbox.py --rows 1000 10000 --sample 1000 --compare OTHER/src --pairs 2

On a fresh store: ``--rows`` pending rows of the ``telegram`` channel over ``rows / --per-chat``
chats (each chat's rows spread through the backlog), each with its ``notify`` task, as an outage
leaves them: every row tried once, and their retries falling due in random order (jittered
backoff), all due now. One worker loop then claims the due tasks one at a time and hands each to
``Notifier.deliver`` with a fake sender (no network) that delivers each chat's rows in the order
they were queued, as the Telegram channel does: a row whose chat has an older row pending is put
back (due again 0.5 s later) until that row is delivered. The loop drains the backlog, or stops
after ``--sample`` deliveries tried (the backlog then is still nearly all there). Reported:

- ``deliver_ms_per_call``: the mean time of one ``Notifier.deliver`` (a delivery or a put-back);
  ``deliver_ms_per_row``: the time spent in it per row delivered;
- ``check_ms_per_call``: the mean time of the check for an older pending row of the chat;
- ``cpu_ms_per_call``: this process's CPU time per delivery tried (on SQLite it includes the
  database's work; on PostgreSQL the server's is not counted);
- ``calls``, ``delivered``, ``calls_per_row``; ``drain_s``: the wall time of the loop, its waits
  for put-back rows included;
- ``in_order``: whether every chat's rows were sent in the order they were queued.

``--src DIR`` imports toolweave from DIR (default: this checkout's ``src``). ``--compare DIR`` runs
each size alternately with this checkout's code and DIR's, each in a process of its own,
``--pairs`` times, and prints the ratios within each pair (other / this).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class FakeSender:
    """The ``telegram`` channel's ordering without its network: each chat's rows in the order they
    were queued (``in_chat_order``; ``sequence`` is how code before migration 0015 asked for it)."""

    name = "telegram"
    in_chat_order = True

    def __init__(self) -> None:
        self.sent: dict[str, list[float]] = {}

    @staticmethod
    def sequence(row: Any) -> str | None:
        chat = (row.get("target") or {}).get("chatId")
        return None if chat is None else str(chat)

    async def deliver(self, notification: Any) -> None:
        chat = str(notification["target"]["chatId"])
        self.sent.setdefault(chat, []).append(float(notification["created_at"]))
        await asyncio.sleep(0)


def build(store: Any, rows: int, per_chat: int, seed: int) -> None:
    from toolweave.model.status import TaskKind
    from toolweave.store import notifications as notes_q
    from toolweave.store import tasks as tasks_q

    rng = random.Random(seed)
    chats = max(1, rows // per_chat)
    now = time.time()
    due = [now - 600 + 300 * rng.random() for _ in range(rows)]  # retries due in random order, all due now

    def chunk(tx: Any, first: int, last: int) -> None:
        for i in range(first, last):
            nid = f"ntf_bench{i:07d}"
            notes_q.insert(
                tx, notification_id=nid, run_id=None, account_id="bench", channel="telegram", event_type="message",
                target={"chatId": 1_000_000 + i % chats}, payload={"text": f"message {i}"},
                created_at=now - 3600 + i * 0.01, attempts=1, last_error="HTTP 502", next_attempt_at=due[i],
            )
            tasks_q.enqueue(tx, TaskKind.NOTIFY, run_id=None, ref_id=nid, now=now - 3600, at=due[i])

    for first in range(0, rows, 1000):
        store.run_sync(chunk, first, min(rows, first + 1000))


async def drain(store: Any, notifier: Any, sample: int | None) -> dict[str, float]:
    """Deliver until no task is left, or ``sample`` deliveries were tried."""
    from toolweave.store import tasks as tasks_q

    spent = calls = 0.0
    while sample is None or calls < sample:
        tasks = await store.tx(tasks_q.claim, "bench", 1, time.time(), 60.0)
        if not tasks:
            row = await store.read(lambda tx: tx.one("SELECT MIN(available_at) AS at FROM tasks"))
            if row is None or row.at is None:
                return {"spent": spent, "calls": calls}
            await asyncio.sleep(min(0.05, max(0.0, float(row.at) - time.time())))
            continue
        started = time.perf_counter()
        await notifier.deliver(tasks[0])
        spent += time.perf_counter() - started
        calls += 1
    return {"spent": spent, "calls": calls}


async def measure(url: str, rows: int, per_chat: int, seed: int, sample: int | None) -> dict[str, Any]:
    from toolweave.notify.dispatcher import Notifier
    from toolweave.store.db import Store

    store = Store(url)
    store.upgrade()
    try:
        build(store, rows, per_chat, seed)
        checks: list[float] = []
        read = store.read

        async def timed_read(fn: Any, *args: Any) -> Any:
            if getattr(fn, "__name__", "") != "_earlier_pending":
                return await read(fn, *args)
            started = time.perf_counter()
            try:
                return await read(fn, *args)
            finally:
                checks.append(time.perf_counter() - started)

        store.read = timed_read  # type: ignore[method-assign]
        sender = FakeSender()
        notifier = Notifier(store, {"telegram": sender})
        cpu, wall = time.process_time(), time.perf_counter()
        done = await drain(store, notifier, sample)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        delivered = store.read_sync(lambda tx: tx.one(
            "SELECT COUNT(*) AS n FROM notifications WHERE status = 'delivered'")).n
        calls = max(1.0, done["calls"])
        return {
            "rows": rows, "chats": max(1, rows // per_chat), "calls": int(done["calls"]), "delivered": delivered,
            "deliver_ms_per_row": round(done["spent"] * 1000 / max(1, delivered), 3),
            "deliver_ms_per_call": round(done["spent"] * 1000 / calls, 3),
            "check_ms_per_call": round(sum(checks) * 1000 / max(1, len(checks)), 3),
            "cpu_ms_per_call": round(cpu * 1000 / calls, 3),
            "calls_per_row": round(done["calls"] / max(1, delivered), 2),
            "drain_s": round(wall, 1),
            "in_order": all(sent == sorted(sent) for sent in sender.sent.values()),
        }
    finally:
        store.close()


def run_one(args: argparse.Namespace, rows: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(args.src).resolve() if args.src else ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.store == "postgres":
            sys.path.insert(1, str(ROOT / "bench"))
            from engine import create_pg_database, drop_pg_database

            url, name = create_pg_database()
            try:
                result = asyncio.run(measure(url, rows, args.per_chat, args.seed, args.sample))
            finally:
                drop_pg_database(name)
        else:
            result = asyncio.run(measure(f"sqlite:///{Path(tmp) / 'bench.db'}", rows, args.per_chat, args.seed,
                                         args.sample))
    import toolweave

    result["store"] = args.store
    result["code"] = str(Path(toolweave.__file__).resolve().parent.parent)
    return result


def compare(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each size with this checkout's code and ``--compare``'s, alternately, in fresh processes."""
    out: list[dict[str, Any]] = []
    for rows in args.rows:
        for pair in range(args.pairs):
            results: dict[str, dict[str, Any]] = {}
            order = ("this", "other") if pair % 2 == 0 else ("other", "this")
            for which in order:
                src = str(ROOT / "src") if which == "this" else args.compare
                command = [sys.executable, __file__, "--rows", str(rows), "--per-chat", str(args.per_chat),
                           "--store", args.store, "--seed", str(args.seed), "--src", src, "--json"]
                if args.sample:
                    command += ["--sample", str(args.sample)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                results[which] = json.loads(done.stdout)[0]
            this, other = results["this"], results["other"]
            out.append({
                "rows": rows, "pair": pair + 1, "this": this, "other": other,
                "other_over_this": {key: round(other[key] / this[key], 2) if this[key] else None
                                    for key in ("deliver_ms_per_call", "check_ms_per_call", "cpu_ms_per_call")},
            })
            print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--per-chat", type=int, default=10, help="rows per chat (the chats are rows / this)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--src", help="import toolweave from this folder (default: this checkout's src)")
    parser.add_argument("--compare", metavar="DIR", help="also run another checkout's src, alternately")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--sample", type=int, help="stop after this many deliveries (default: drain the backlog)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.compare:
        results = compare(args)
    else:
        results = [run_one(args, rows) for rows in args.rows]
    print(json.dumps(results, indent=2) if args.json else "\n".join(str(r) for r in results))


if __name__ == "__main__":
    main()
