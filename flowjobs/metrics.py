"""Prometheus metrics: the cluster-wide figures kept in Redis, read by a custom collector, and a
worker's own figures (``serve_process_metrics``).

``FlowjobsCollector`` reads the counters and histograms the Lua scripts keep
(``flowjobs/core/metrics.py``) in one round-trip, plus what RQ knows of the queue (depth, age of
the oldest queued job, workers alive) and each schedule's lag. Any process can expose it with the
same figures: the web process does at ``/metrics``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis

from flowjobs.core.clock import utcnow
from flowjobs.core.metrics import DURATION_BUCKETS, FAMILIES, Family, Series
from flowjobs.instruments import Instruments, install_instruments
from flowjobs.queries import queue_health
from flowjobs.store.metrics import MetricRecords

PREFIX = "flowjobs_"


class FlowjobsCollector(Collector):
    """The cluster-wide metrics of one flowjobs deployment (one Redis, one key prefix)."""

    def __init__(self, store: MetricRecords, redis: Redis, queues: Sequence[str]) -> None:
        self.store = store
        self.redis = redis
        self.queues = list(queues)

    def collect(self) -> Iterator[Metric]:
        snapshot = self.store.read_metrics()
        yield from _families(snapshot.series)
        lag = GaugeMetricFamily(
            f"{PREFIX}schedule_lag_seconds",
            "Seconds the schedule's next tick is overdue (now minus its due time; 0 when not due).",
            labels=["schedule"],
        )
        for schedule_id, seconds in sorted(snapshot.schedule_lag_seconds.items()):
            lag.add_metric([schedule_id], seconds)
        yield lag
        yield from self._queues()

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(f"{PREFIX}queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            f"{PREFIX}queue_oldest_job_age_seconds",
            "Age of the oldest job waiting in the RQ queue (0 when empty).",
            labels=["queue"],
        )
        workers = GaugeMetricFamily(f"{PREFIX}workers", "RQ workers alive on the queue.", labels=["queue"])
        now = utcnow()
        for name in self.queues:
            health = queue_health(self.redis, name, now)
            depth.add_metric([name], health.depth)
            oldest.add_metric([name], health.oldest_age_seconds)
            workers.add_metric([name], health.workers)
        yield depth
        yield oldest
        yield workers


def _families(series: list[Series]) -> Iterator[Metric]:
    """Prometheus families of the series read from Redis; every family is exposed, even empty."""
    by_family: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        by_family[s.family.name].append(s)
    for family in FAMILIES:
        if family.histogram:
            yield _histogram(family, by_family[family.name])
        else:
            counter = CounterMetricFamily(PREFIX + family.name, family.help, labels=list(family.labels))
            for s in sorted(by_family[family.name], key=lambda s: s.labels):
                counter.add_metric(list(s.labels), s.value)
            yield counter


def _histogram(family: Family, series: list[Series]) -> HistogramMetricFamily:
    """A histogram from per-bucket counts (each observation counted in its own bucket only)."""
    histogram = HistogramMetricFamily(PREFIX + family.name, family.help, labels=list(family.labels))
    counts: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0] * (len(DURATION_BUCKETS) + 1))
    sums: dict[tuple[str, ...], float] = defaultdict(float)
    for s in series:
        if s.bucket == "sum_ms":
            sums[s.labels] += s.value / 1000
        elif s.bucket == "sum":
            sums[s.labels] += s.value
        elif s.bucket is not None and s.bucket.isdigit() and 1 <= int(s.bucket) <= len(DURATION_BUCKETS) + 1:
            counts[s.labels][int(s.bucket) - 1] = s.value
    for labels in sorted(counts):
        cumulative, buckets = 0.0, []
        for bound, count in zip((*(f"{b:g}" for b in DURATION_BUCKETS), "+Inf"), counts[labels], strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        histogram.add_metric(list(labels), buckets, sums[labels])
    return histogram


def metrics_registry(store: MetricRecords, redis: Redis, queues: Sequence[str]) -> CollectorRegistry:
    """A registry holding only flowjobs' cluster-wide collector (what ``/metrics`` serves)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowjobsCollector(store, redis, queues))
    return registry


class ProcessInstruments(Instruments):
    """A worker's own figures, as Prometheus metrics of this process and its work-horses."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        buckets = (*DURATION_BUCKETS, float("inf"))
        self.steps = Counter(
            "flowjobs_worker_steps_executed",
            "Step attempts this worker executed, by outcome.",
            ["flow", "outcome"],
            registry=registry,
        )
        self.handler_seconds = Histogram(
            "flowjobs_worker_handler_seconds",
            "Time in step handlers on this worker.",
            ["flow"],
            buckets=buckets,
            registry=registry,
        )
        self.renewals = Counter(
            "flowjobs_worker_lease_renewals", "Claim leases this worker renewed.", registry=registry
        )
        self.losses = Counter(
            "flowjobs_worker_lease_losses",
            "Claim leases this worker found no longer held when renewing.",
            registry=registry,
        )
        self.duty_runs = Counter(
            "flowjobs_worker_duty_runs", "Duty passes this worker ran.", ["duty"], registry=registry
        )
        self.duty_failures = Counter(
            "flowjobs_worker_duty_failures", "Duty passes that raised.", ["duty"], registry=registry
        )

    def step_executed(self, flow: str, outcome: str) -> None:
        self.steps.labels(flow, outcome).inc()

    def handler_ran(self, flow: str, seconds: float) -> None:
        self.handler_seconds.labels(flow).observe(seconds)

    def leases_renewed(self, renewed: int, lost: int) -> None:
        self.renewals.inc(renewed)
        self.losses.inc(lost)

    def duty_ran(self, duty: str, *, failed: bool) -> None:
        self.duty_runs.labels(duty).inc()
        if failed:
            self.duty_failures.labels(duty).inc()


def serve_process_metrics(host: str, port: int) -> None:
    """Serve this worker's own figures on ``host:port`` (``flowjobs worker --metrics-port``) and install
    them as the process's instruments.

    A forking worker executes steps in work-horses: prometheus-client's multiprocess mode keeps
    each process's values in a file of a directory private to this worker, and every scrape sums
    them. The horses, one at a time, share one file (named after the worker), so the directory
    holds two files however many jobs ran; it is removed when the worker exits.
    """
    directory = tempfile.mkdtemp(prefix="flowjobs-metrics-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    worker_pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        lambda: str(worker_pid) if os.getpid() == worker_pid else f"{worker_pid}-horse"
    )
    install_instruments(ProcessInstruments(registry=None))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
