"""Prometheus metrics on a per-App registry (never the global one).

Runs by status, queue depth and lag, step durations and backend errors are read from the store at
scrape time (so every worker's work counts, whichever process did it); webhook handling time is
measured here, in the process that answers the webhook.

``/metrics`` needs no key, and reading the store aggregates every stored step and generation: the
figures of one reading serve every scrape made while it is read and for ``REUSE_SECONDS`` after,
so a flood of scrapes reads the store about once a second, one reading at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from toolweave.app import App

STEP_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REUSE_SECONDS = 1.0
"""How long the store's figures of one scrape serve the next ones."""


class _StoreCollector(Collector):
    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}
        self.work: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("toolweave_runs", "Runs by status (top-level and nested).", labels=["status"])
        for status, count in sorted((self.stats.get("runs") or {}).items()):
            runs.add_metric([status], count)
        yield runs
        depth = GaugeMetricFamily("toolweave_queue_depth", "Tasks due now, by kind.", labels=["kind"])
        for kind, count in sorted((self.stats.get("queue") or {}).items()):
            depth.add_metric([kind], count)
        yield depth
        lag = self.stats.get("queueLagSeconds")
        yield GaugeMetricFamily(
            "toolweave_queue_lag_seconds", "How long the oldest due task has waited (0: none waiting).", value=lag or 0.0
        )
        hist = HistogramMetricFamily(
            "toolweave_step_duration_seconds", "Durations of finished steps, by final status.", labels=["status"]
        )
        for status, data in sorted((self.work.get("steps") or {}).items()):
            counts = list(data["buckets"])
            buckets = [(_le(b), float(c)) for b, c in zip(STEP_BUCKETS, counts, strict=True)]
            buckets.append(("+Inf", float(data["count"])))
            hist.add_metric([status], buckets, data["sum"])
        yield hist
        errors = CounterMetricFamily(
            "toolweave_backend_errors", "Generations that failed or timed out, by service.", labels=["service", "status"]
        )
        for service, status, count in self.work.get("backendErrors") or []:
            errors.add_metric([service, status], count)
        yield errors


def _le(bound: float) -> str:
    return str(float(bound))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._store = _StoreCollector()
        self.registry.register(self._store)
        self.webhook_seconds = Histogram(
            "toolweave_webhook_handling_seconds",
            "Time to handle a backend webhook, by service and outcome.",
            labelnames=["service", "outcome"],
            registry=self.registry,
        )
        self._reading = asyncio.Lock()
        self._read_at = -float("inf")

    async def render(self, app: App) -> bytes:
        async with self._reading:  # one reading at a time; those waiting take its figures
            if time.monotonic() - self._read_at > REUSE_SECONDS:
                self._store.stats = await app.stats()
                self._store.work = await app.work_stats(STEP_BUCKETS)
                self._read_at = time.monotonic()
        return generate_latest(self.registry)
