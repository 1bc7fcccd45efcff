"""What the operator adapters read (the web API, the flows UI, the CLI): counts, histories, flags
and health probes, behind one app-layer object (``FlowClient.queries``) so that the store's method
names and RQ's worker registry are not the adapters' API."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from flowjobs.core.clock import utcnow
from flowjobs.core.manifest import FlowDefinition
from flowjobs.core.stats import (
    SAMPLE_RUNS,
    SAMPLE_STEPS,
    WINDOW_HOURS,
    FlowStats,
    StatsReport,
    flow_stats,
    hour_edges,
)
from flowjobs.store.base import ListenersMarker
from flowjobs.store.run_store import RunStore


@dataclass(frozen=True)
class QueueHealth:
    """What RQ knows of one queue: as rq-dashboard and Hangfire's dashboard show it."""

    name: str
    depth: int
    """Jobs waiting in it."""
    oldest_age_seconds: float
    """Since the oldest waiting job was enqueued (0 when none)."""
    workers: int
    """RQ workers alive listening on it."""


def queue_health(redis: Redis, queue_name: str, now: datetime) -> QueueHealth:
    """Depth, age of the oldest waiting job and workers alive of one RQ queue (the flows UI's
    overview and the ``/metrics`` collector read the same)."""
    queue = Queue(queue_name, connection=redis)
    age = 0.0
    first = queue.get_job_ids(0, 1)
    raw = redis.hget(Job.key_for(first[0]), "enqueued_at") if first else None
    if raw:
        enqueued = datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))
        if enqueued.tzinfo is None:
            enqueued = enqueued.replace(tzinfo=UTC)  # RQ stores UTC without an offset
        age = max(0.0, (now - enqueued).total_seconds())
    return QueueHealth(queue_name, queue.count, age, Worker.count(connection=redis, queue=queue))


class Queries:
    """Read-only questions about the runs and flows in one Redis."""

    def __init__(self, redis: Redis, store: RunStore) -> None:
        self.redis = redis
        self.store = store
        # The store's own reads, under the names the adapters use (bound here, not re-declared).
        #: ``flow_enabled(flow_id)``: False only when the flow was explicitly disabled.
        self.flow_enabled = store.flows.flow_enabled
        #: ``count_runs(flow_ids=, statuses=, before=, since=)``: runs per (flow, status) pair.
        self.count_runs = store.history.count_runs
        #: ``events(run_id)``: the run's event history, oldest first.
        self.events = store.history.events
        #: ``manifest(manifest_hash)``: the pinned manifest a run plans against.
        self.manifest = store.flows.load_manifest

    def events_channel(self) -> str:
        """The pub/sub channel run events are published on (``<run_id>|<event>``) while someone
        listens: a subscriber calls ``keep_listening`` once subscribed and again at least every
        ``LISTENERS_TTL_SECONDS / 2`` seconds, or workers publish nothing (README, "Flows UI")."""
        return self.store.keys.events_channel()

    def listeners_marker(self) -> ListenersMarker:
        """The key ``keep_listening`` sets, for a caller with a connection of its own (the flows
        UI's asyncio one): ``mark`` it, then wait ``settles_in`` its reply."""
        return ListenersMarker(self.store.keys.listeners())

    def keep_listening(self) -> float:
        """Say that a live view follows ``events_channel`` for the next ``LISTENERS_TTL_SECONDS``:
        runs started from now on publish every event, and workers publish every run's events
        once the seconds returned have passed (a worker trusts its read of the marker a while)."""
        marker = self.listeners_marker()
        return marker.settles_in(marker.mark(self.redis))

    def queue_health(self, queue_name: str) -> QueueHealth:
        """Depth, oldest waiting job's age and workers alive of one RQ queue."""
        return queue_health(self.redis, queue_name, utcnow())

    def flow_stats(self, definition: FlowDefinition, now: datetime | None = None) -> FlowStats:
        """One flow's health over the last ``WINDOW_HOURS`` hours (``flowjobs/core/stats.py``):
        exact counts, durations of at most ``SAMPLE_RUNS`` runs and ``SAMPLE_STEPS`` steps."""
        edges = hour_edges(now or utcnow())
        window = self.store.stats.flow_window(
            definition.id, edges, sample_runs=SAMPLE_RUNS, sample_steps=SAMPLE_STEPS
        )
        return flow_stats(
            definition.id,
            definition.name,
            edges,
            window.hour_counts,
            window.runs,
            window.steps,
            steps_complete=window.steps_complete,
        )

    def stats(self, definitions: Sequence[FlowDefinition]) -> StatsReport:
        """``flow_stats`` of each flow, over one window ending now."""
        now = utcnow()
        return StatsReport(
            window_hours=WINDOW_HOURS,
            generated_at=now,
            flows=[self.flow_stats(definition, now) for definition in definitions],
        )

    def workers(self, queue_name: str) -> int:
        """How many RQ workers listen on ``queue_name``."""
        return Worker.count(connection=self.redis, queue=Queue(queue_name, connection=self.redis))

    def duty_lag(self, duty: str) -> tuple[float | None, bool]:
        """Seconds the oldest overdue duty item waits (an expired lease, a passed run deadline, a
        due schedule; None: nothing overdue), and whether any process ran the duties within the
        last period (the lock of ``duty``, the duties' heartbeat, is alive), in one round-trip."""
        keys = self.store.keys
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for key in (keys.leases(), keys.deadlines(), keys.schedules_due()):
                pipe.zrange(key, 0, 0, withscores=True)
            pipe.exists(keys.duty_lock(duty))
            server_time, *oldest, lock = pipe.execute()
        now_ms = server_time[0] * 1000 + server_time[1] // 1000
        overdue = [now_ms - int(rows[0][1]) for rows in oldest if rows and now_ms > int(rows[0][1])]
        lag = max(overdue) / 1000 if overdue else None
        return lag, bool(lock)
