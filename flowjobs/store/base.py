"""What every noun of the store shares: the Redis, its key names, the registered scripts."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flowjobs.core.clock import epoch_ms, iso, utcnow
from flowjobs.core.keys import Keys
from flowjobs.core.statuses import RunStatus
from flowjobs.store.replicas import ReplicaWait
from flowjobs.store.scripts import Scripts

#: Errors that mean Redis is unreachable: not a bad run or a bad record, so a duty's pass stops on
#: them (and backs off) instead of marking anything failed.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class StoreContext:
    """What the store's nouns share, owned once: the Redis, the key names, the registered scripts,
    the retention and event bounds, and the arguments every run-writing script takes."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys | None = None,
        *,
        retention_seconds: int,
        max_run_events: int,
        replica_wait: ReplicaWait | None = None,
    ) -> None:
        self.redis = redis
        self.replica_wait = replica_wait
        self.keys = keys or Keys()
        self.retention_seconds = retention_seconds
        self.max_run_events = max_run_events
        self.scripts = Scripts(redis)
        self._status_keys = {status.value: self.keys.status_runs(status.value) for status in RunStatus}

    def run_args(self, run_id: UUID | str) -> dict[str, Any]:
        """The JSON fields of every script that writes a run (``common.lua``'s helpers use them)."""
        now = utcnow()
        return {
            "run_id": str(run_id),
            "run_key": self.keys.run(run_id),
            "events_key": self.keys.events(run_id),
            "events_channel": self.keys.events_channel(),
            "status_keys": self._status_keys,
            "flow_status_template": self.keys.flow_status_template(),
            "deadlines_key": self.keys.deadlines(),
            "now": iso(now),
            "now_ms": epoch_ms(now),
            "max_events": self.max_run_events,
            "metrics_key": self.keys.metrics(),
        }


class StorePart:
    """One noun of the store, built over the shared ``StoreContext`` (its Redis, keys and scripts
    held directly, so a step's calls chase no extra attribute)."""

    def __init__(self, context: StoreContext) -> None:
        self.context = context
        self.redis = context.redis
        self.keys = context.keys
        self.scripts = context.scripts
