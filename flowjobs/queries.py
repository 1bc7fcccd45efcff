"""What the operator adapters read (the web API, the flows UI, the CLI): counts, histories, flags
and health probes, behind one app-layer object (``FlowClient.queries``) so that the store's method
names and RQ's worker registry are not the adapters' API."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Worker

from flowjobs.store.run_store import RunStore


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
        """The pub/sub channel every run event is published on (``<run_id>|<event>``)."""
        return self.store.keys.events_channel()

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
