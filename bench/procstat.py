"""What the benchmark scripts read about a process from /proc, and their shared argument type."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    must run on this machine (its ``/proc`` is read)."""

    def __init__(self, admin_url: str, database: str) -> None:
        import psycopg

        self._conn = psycopg.connect(admin_url, autocommit=True)
        self._database = database
        self._start: dict[int, float] = {}
        self._seen: dict[int, float] = {}
        self._own = self._conn.info.backend_pid
        self.sample(first=True)

    def sample(self, first: bool = False) -> None:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", (self._database, self._own)
        ).fetchall()
        for (pid,) in rows:
            cpu = cpu_seconds(pid)
            if first:
                self._start[pid] = cpu
            self._seen[pid] = max(cpu, self._seen.get(pid, 0.0))

    def cpu_seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._seen.items())

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
