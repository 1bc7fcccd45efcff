"""``create_run.lua`` over an asyncio Redis connection: the web process writes webhook runs on its
event loop, with no thread hand-off per delivery and no blocked loop while Redis answers."""

from __future__ import annotations

from redis.asyncio import Redis

from flowjobs.core.metrics import metric_field
from flowjobs.store.scripts import decode_create_run, script_argv, script_source
from flowjobs.store.transitions import Created, NewRun, Refused


class AsyncRunWrites:
    """Writes runs built by ``RunWrites.new_run`` through an asyncio client of the same Redis."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(script_source("create_run"))

    async def create_run(self, new: NewRun) -> Created | Refused:
        """``RunWrites.create_run``, awaited."""
        return decode_create_run(await self._create(args=script_argv(new.args, new.argv)), new.run_id)

    async def count_metric(self, key: str, family: str, *labels: str) -> None:
        """``MetricRecords.count_metric`` on the metrics hash ``key``, awaited."""
        await self.redis.hincrby(key, metric_field(family, *labels), 1)
