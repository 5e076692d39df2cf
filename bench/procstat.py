"""What the benchmark scripts read about a process from /proc, and their shared argument type."""

from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot (/proc/stat); busy excludes idle and
    iowait. Two readings give how many cores were busy on average between them (``busy_cores``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_cores(start: tuple[int, int], end: tuple[int, int]) -> float:
    """The cores busy on average between two ``machine_jiffies`` readings (every process on the
    machine, other sessions' included)."""
    total = end[1] - start[1]
    return round((end[0] - start[0]) / total * (os.cpu_count() or 1), 2) if total > 0 else float("nan")


def vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM) in MB (0 when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PgBackends:
    """The CPU time of the PostgreSQL server processes serving one database.

    ``sample()`` reads every backend connected to the database (``pg_stat_activity``) and keeps the
    highest CPU time seen per process, so a backend that exits between samples still counts up to
    its last sample; ``cpu_seconds()`` is the sum since the first sample (the server's shared
    processes, such as the WAL writer, are not counted: other databases use them too). The server
    must run on this machine (its ``/proc`` is read).

    Each sample also counts what the backends inside a transaction were doing (``waits``): a
    PostgreSQL wait event (``Lock:transactionid`` is a row lock held by another transaction,
    ``IO:WALSync`` a commit's flush), ``cpu`` for a backend running with no wait event, or
    ``client`` for one idle in its transaction, waiting for the client's next statement."""

    def __init__(self, admin_url: str, database: str) -> None:
        import psycopg

        self._conn = psycopg.connect(admin_url, autocommit=True)
        self._database = database
        self._start: dict[int, float] = {}
        self._seen: dict[int, float] = {}
        self._own = self._conn.info.backend_pid
        self.waits: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self.sample(first=True)

    def sample(self, first: bool = False) -> None:
        rows = self._conn.execute(
            "SELECT pid, state, wait_event_type, wait_event FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            (self._database, self._own),
        ).fetchall()
        self.samples += 1
        for pid, state, wait_type, wait in rows:
            if state == "idle in transaction":
                self.waits["client"] += 1
            elif state == "active":
                self.waits[f"{wait_type}:{wait}" if wait_type else "cpu"] += 1
            cpu = cpu_seconds(pid)
            if first:
                self._start[pid] = cpu
            self._seen[pid] = max(cpu, self._seen.get(pid, 0.0))

    def cpu_seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._seen.items())

    def wait_shares(self) -> dict[str, float]:
        """Backends in each state (``waits``), on average per sample, the largest first."""
        if self.samples == 0:
            return {}
        return {k: round(v / self.samples, 2) for k, v in self.waits.most_common()}

    def close(self) -> None:
        self._conn.close()


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
