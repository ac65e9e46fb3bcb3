"""Prometheus metrics of one service (its own registry: two apps in one process,
as in tests, never share counters)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sandbox.service.store import Store


class _Live(Collector):
    """Gauges read at scrape time from the store and the queue."""

    def __init__(self, store: Store, running: Callable[[], int]) -> None:
        self.store, self.running = store, running

    def collect(self) -> Iterator[Any]:
        by_status = GaugeMetricFamily("sandbox_runs", "Runs in the store by status",
                                      labels=["status"])
        counts = self.store.counts()
        for status, n in sorted(counts.items()):
            by_status.add_metric([status], n)
        yield by_status
        yield GaugeMetricFamily("sandbox_queue_depth", "Runs waiting to start",
                                value=counts.get("queued", 0))
        yield GaugeMetricFamily("sandbox_live_sandboxes", "Sandboxes running now",
                                value=self.running())


class Metrics:
    def __init__(self, store: Store, running: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Live(store, running))
        self.duration = Histogram("sandbox_run_duration_seconds",
                                  "From start to end of a run", ["status"],
                                  registry=self.registry,
                                  buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                                           300, 1800))
        self.submitted = Counter("sandbox_runs_submitted", "Runs accepted", registry=self.registry)
        self.audit_records = Counter("sandbox_audit_records", "Audit records of ended runs",
                                     registry=self.registry)

    def ended(self, status: str, seconds: float | None, result: dict[str, Any] | None) -> None:
        if seconds is not None and seconds >= 0:
            self.duration.labels(status=status).observe(seconds)
        audit = (result or {}).get("audit") or {}
        n = audit.get("records") if isinstance(audit, dict) else None
        if isinstance(n, int) and n > 0:
            self.audit_records.inc(n)
