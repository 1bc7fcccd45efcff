"""Benchmark: the retention purge over a large history of finished runs.

Run as ``python bench/retention_scale.py [--runs N] [--batch B] [--floor-ms F]``; prints one
``name=value`` line per figure and exits 1 when the floor fails (naming it) or the purge did not
delete exactly the seeded runs.

What it measures, on its own key prefix ``fjretain<random>:`` and queue ``fjretain<random>-q``:

* **History.** N finished runs (default 100,000), written straight into Redis with pipelined
  commands (key names from ``flowjobs.core.keys.Keys``, job ids from ``flowjobs.core.job_calls``), each like a
  3-step run that ended 30 days ago: its run hash, steps hash, 3 step hashes (the last one on its
  2nd attempt, with its 1st archived in the attempts hash), 6 events, its entries in the runs,
  per-flow, per-status and per-flow-per-status indexes, and an RQ job hash (``rq:job:<id>``) for
  each of its 5 jobs (plain ids: none is in the reverse job index). 10 % are Failed, the rest Succeeded.
* **Purge.** ``RunStore.retention.purge_finished`` with a cutoff of 7 days ago and the RQ runner's job keys,
  ``--batch`` runs per deleting script call (default the duty's size, ``DEFAULT_BATCH``). Printed:
  ``purge_runs_per_second`` (seeded runs / wall time of the whole purge, reads included),
  ``purge_max_batch_ms`` (the longest single deleting call, round-trip included: how long Redis
  is blocked at most), ``purge_mean_batch_ms`` and ``purge_batches``. Floor: the longest batch
  within 50 ms.
* **Check.** Every seeded run is gone: no key left under the prefix, no job hash left.

Cleanup: every key under its prefix and RQ's keys of its jobs (``bench/space.py``). It never flushes.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from redis import Redis
from redis.client import Pipeline

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import bench_redis, remove_space  # noqa: E402
from flowjobs.core.clock import epoch_score, iso, utcnow  # noqa: E402
from flowjobs.core.job_calls import step_job_id, trigger_job_id  # noqa: E402
from flowjobs.core.keys import Keys  # noqa: E402
from flowjobs.core.statuses import RunStatus  # noqa: E402
from flowjobs.factory import runner_from_settings, store_from_settings  # noqa: E402
from flowjobs.runtime.rq import job_keys  # noqa: E402
from flowjobs.settings import Settings  # noqa: E402
from flowjobs.store.codec import step_field  # noqa: E402
from flowjobs.store.retention import DEFAULT_BATCH, stored_job_ids  # noqa: E402

DEFAULT_RUNS = 100_000
#: The floor: milliseconds the longest deleting call may take.
FLOOR_MAX_BATCH_MS = 50.0
SEED_CHUNK = 1_000
STEPS = ("fetch", "charge", "ship")
FLOWS = 10


class BenchError(RuntimeError):
    """The purge did not delete exactly the seeded runs."""


def seed(redis: Redis, keys: Keys, runs: int) -> None:
    """Write ``runs`` finished runs (see the module docstring), ``SEED_CHUNK`` runs per pipeline."""
    flow_ids = [str(uuid.uuid4()) for _ in range(FLOWS)]
    ended = utcnow() - timedelta(days=30)
    for start in range(0, runs, SEED_CHUNK):
        with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + SEED_CHUNK, runs)):
                seed_run(pipe, keys, flow_ids[i % FLOWS], i, ended - timedelta(seconds=i))
            pipe.execute()


def seed_run(pipe: Pipeline, keys: Keys, flow_id: str, i: int, ended: datetime) -> None:
    """Queue one finished run's writes on ``pipe``."""
    run_id = str(uuid.uuid4())
    status = RunStatus.Failed if i % 10 == 0 else RunStatus.Succeeded
    started = ended - timedelta(seconds=2)
    score = epoch_score(started)
    trigger = trigger_job_id(run_id)
    run = {
        "id": run_id, "flow_id": flow_id, "flow_name": "retention", "status": status.value,
        "trigger_key": "manual", "trigger_data_json": json.dumps({"orderId": i}),
        "background_job_id": trigger, "started_at": iso(started), "completed_at": iso(ended),
        "started_score": str(score),
    }
    pipe.hset(keys.run(run_id), mapping=run)  # type: ignore[arg-type]
    jobs = [trigger]
    events = [{"sequence": 1, "type": "run.started", "timestamp": iso(started)}]
    for n, step_key in enumerate(STEPS):
        attempts = 2 if n == len(STEPS) - 1 else 1
        job_id = step_job_id(run_id, step_key, attempts)
        jobs += [step_job_id(run_id, step_key, a) for a in range(1, attempts + 1)]
        record = {
            "step_type": "Noop", "status": "Succeeded", "attempt": attempts, "job_id": job_id,
            "started_at": iso(started), "completed_at": iso(ended), "output_json": "null",
        }
        pipe.hset(keys.run_steps(run_id), mapping={step_field(step_key, k): v for k, v in record.items()})
        if attempts > 1:
            archived = {"status": "Failed", "job_id": step_job_id(run_id, step_key, 1), "error": "boom"}
            pipe.hset(keys.attempts(run_id), f"{step_key}#1", json.dumps(archived))
        events.append({"sequence": len(events) + 1, "type": "step.succeeded", "step_key": step_key})
    events.append({"sequence": len(events) + 1, "type": "run.completed", "message": status.value})
    pipe.rpush(keys.events(run_id), *[json.dumps(e) for e in events])
    for index in (keys.runs(), keys.flow_runs(flow_id), keys.status_runs(status.value),
                  keys.flow_status_runs(flow_id, status.value)):
        pipe.zadd(index, {run_id: score})
    for job_id in jobs:
        job = {"status": "finished", "origin": "bench", "description": run_id}
        pipe.hset(job_keys(job_id)[0], mapping=job)  # type: ignore[arg-type]


def measure(redis: Redis, runs: int, batch: int) -> tuple[float, list[float]]:
    """Seed, purge and check in a space of its own; returns the purge's wall time and each
    deleting call's wall time (seconds). The space is removed whatever happens."""
    token = f"fjretain{uuid.uuid4().hex[:10]}"
    prefix, queue = f"{token}:", f"{token}-q"
    keys = Keys(prefix)
    settings = Settings(key_prefix=prefix, queue=queue)
    store = store_from_settings(settings, redis)
    jobs = runner_from_settings(settings, redis).stored_jobs()
    try:
        start = time.perf_counter()
        seed(redis, keys, runs)
        print(f"seed_seconds={time.perf_counter() - start:.1f}", flush=True)
        job_ids = sorted(stored_job_ids(redis, keys))
        start = time.perf_counter()
        result = store.retention.purge_finished(utcnow() - timedelta(days=7), jobs=jobs, batch_size=batch)
        seconds = time.perf_counter() - start
        if result.runs != runs:
            raise BenchError(f"purged {result.runs} runs of {runs}")
        left = sum(1 for _ in redis.scan_iter(match=f"{prefix}*", count=5000))
        hashes = sum(redis.exists(*job_keys_chunk) for job_keys_chunk in _chunks(job_ids))
        if left or hashes:
            raise BenchError(f"{left} key(s) left under the prefix, {hashes} RQ job hash(es) left")
        return seconds, result.batch_seconds
    finally:
        remove_space(redis, prefix=prefix, token=token, queue=queue)


def _chunks(job_ids: Sequence[str], size: int = 1000) -> list[list[str]]:
    """RQ job hash keys of ``job_ids``, in chunks for ``EXISTS``."""
    return [[job_keys(j)[0] for j in job_ids[i : i + size]] for i in range(0, len(job_ids), size)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="finished runs to seed and purge")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="runs per deleting script call")
    parser.add_argument("--floor-ms", type=float, default=FLOOR_MAX_BATCH_MS,
                        help="the longest deleting call may take at most this (ms)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.batch < 1:
        parser.error("--runs and --batch must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url, server = bench_redis()
    try:
        seconds, batches = measure(Redis.from_url(url), args.runs, args.batch)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    max_ms = max(batches) * 1000
    print(f"purge_runs={args.runs}")
    print(f"purge_seconds={seconds:.2f}")
    print(f"purge_runs_per_second={args.runs / seconds:.0f}")
    print(f"purge_batches={len(batches)}")
    print(f"purge_mean_batch_ms={statistics.fmean(batches) * 1000:.1f}")
    print(f"purge_max_batch_ms={max_ms:.1f}")
    if max_ms > args.floor_ms:
        print(f"floor failed: the longest deleting call took {max_ms:.1f} ms > {args.floor_ms:g} ms")
        return 1
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
