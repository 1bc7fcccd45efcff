"""A benchmark's corner of a shared Redis, and its removal: nothing else is touched, nothing flushed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from types import FrameType

from redis import Redis

from flowjobs.core.keys import Keys
from flowjobs.embedded import EmbeddedRedis, ensure_redis
from flowjobs.store.retention import stored_job_ids

#: Keys RQ keeps per job (``rq:<kind>:<job id>``): its hash, its results stream, its executions.
RQ_JOB_KEY_KINDS = ("job", "results", "executions")
_CHUNK = 1000


def remove_space(redis: Redis, *, prefix: str, token: str, queue: str, job_ids: Iterable[str] = ()) -> None:
    """Delete a benchmark's keys: RQ's keys of its jobs (flowjobs' ones from its runs and the
    reverse job index, ``stored_job_ids``, plus ``job_ids`` it queued itself), every key under its
    prefix, RQ's keys carrying its token (queue, registries, workers), and its queue's and workers'
    entries in RQ's shared sets."""
    ids = [*stored_job_ids(redis, Keys(prefix)), *job_ids]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        redis.unlink(*[f"rq:{kind}:{j}" for j in chunk for kind in RQ_JOB_KEY_KINDS])
    for pattern in (f"{prefix}*", f"rq:*{token}*"):
        batch: list[bytes] = []
        for key in redis.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= _CHUNK:
                redis.unlink(*batch)
                batch.clear()
        if batch:
            redis.unlink(*batch)
    redis.srem("rq:queues", f"rq:queue:{queue}")
    workers = [m for m in redis.smembers("rq:workers") if token.encode() in m]
    if workers:
        redis.srem("rq:workers", *workers)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def bench_redis() -> tuple[str, EmbeddedRedis | None]:
    """Start-up shared by the benchmarks: SIGTERM ends them like Ctrl-C (their ``finally`` cleans
    up), and the Redis at ``REDIS_URL`` (default local) is used, else an embedded server they must
    stop."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    url, server = ensure_redis(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    if server is not None:
        print(f"note: no Redis at the configured URL; started an embedded server at {url}")
    return url, server


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
