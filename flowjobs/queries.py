"""What the operator adapters read (the web API, the flows UI, the CLI): counts, histories, flags
and health probes, behind one app-layer object (``FlowClient.queries``) so that the store's method
names and RQ's worker registry are not the adapters' API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from redis import Redis
from rq import Queue, Worker

from flowjobs.core.manifest import FlowManifest
from flowjobs.core.records import RunEvent
from flowjobs.core.statuses import RunStatus
from flowjobs.store.run_store import RunStore


class Queries:
    """Read-only questions about the runs and flows in one Redis."""

    def __init__(self, redis: Redis, store: RunStore) -> None:
        self.redis = redis
        self.store = store

    def flow_enabled(self, flow_id: UUID | str) -> bool:
        """False only when the flow was explicitly disabled."""
        return self.store.flow_enabled(flow_id)

    def count_runs(
        self,
        *,
        flow_ids: Sequence[UUID | str | None] = (None,),
        statuses: Sequence[RunStatus | None] = (None,),
        before: datetime | None = None,
        since: datetime | None = None,
    ) -> dict[tuple[str | None, RunStatus | None], int]:
        """How many runs each (flow, status) pair has (None: any), started in ``[since, before)``."""
        return self.store.count_runs(flow_ids=flow_ids, statuses=statuses, before=before, since=since)

    def events(self, run_id: UUID | str) -> list[RunEvent]:
        """The run's event history, oldest first (its last ``max_run_events`` events)."""
        return self.store.events(run_id)

    def manifest(self, manifest_hash: str) -> FlowManifest:
        """The pinned manifest a run plans against."""
        return self.store.load_manifest(manifest_hash)

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
