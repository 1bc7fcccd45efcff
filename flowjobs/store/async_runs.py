"""``create_run.lua`` over an asyncio Redis connection: the web process writes webhook runs on its
event loop, with no thread hand-off per delivery and no blocked loop while Redis answers."""

from __future__ import annotations

from redis.asyncio import Redis

from flowjobs.core.metrics import metric_field
from flowjobs.store.replicas import ReplicaWait
from flowjobs.store.scripts import check_keys, decode_create_run, script_call, script_source
from flowjobs.store.transitions import AdmissionRefusal, Created, NewRun, Refused


class AsyncRunWrites:
    """Writes runs built by ``RunWrites.new_run`` through an asyncio client of the same Redis."""

    def __init__(self, redis: Redis, replica_wait: ReplicaWait | None = None) -> None:
        self.redis = redis
        self.replica_wait = replica_wait
        self._create = redis.register_script(script_source("create_run", check_keys()))

    async def create_run(self, new: NewRun) -> Created | Refused[AdmissionRefusal]:
        """``RunWrites.create_run``, awaited (with its ``WAIT`` when ``replica_wait`` is set)."""
        keys, args = script_call(new.args, new.argv)
        wait = self.replica_wait
        if wait is None:
            return decode_create_run(await self._create(keys=keys, args=args), new.run_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._create(keys=keys, args=args, client=pipe)
            pipe.wait(wait.replicas, wait.timeout_ms)
            reply, acknowledged = await pipe.execute()
        return wait.check(decode_create_run(reply, new.run_id), int(acknowledged))

    async def count_metric(self, key: str, family: str, *labels: str) -> None:
        """``MetricRecords.count_metric`` on the metrics hash ``key``, awaited."""
        await self.redis.hincrby(key, metric_field(family, *labels), 1)
