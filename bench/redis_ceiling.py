"""Benchmark (report only): how close one Redis gets to saturation as worker processes are added.

Run as ``python bench/redis_ceiling.py [--runs N] [--workers 1,2,4] [--worker-class simple|fork]``
against a Redis no other client uses (``REDIS_URL``): for each worker count, ``N`` linear
10-step ``Noop`` runs are triggered, released at once and drained by that many worker processes
(``bench/steps_vs_rq.py``'s drain), and it prints per drain: ``steps_per_s``,
``redis_cpu_us_per_step`` (``used_cpu_sys + used_cpu_user`` of ``INFO cpu`` around the drain, per
step job, its run's trigger job included), ``redis_core_share`` (Redis CPU seconds per second
of the drain: 1.0 is one core, Redis' own ceiling since it runs commands on one thread), and
``machine_load`` (1-min load average after). ``docs/scaling.md`` reads these figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import bench_redis  # noqa: E402
from bench.steps_vs_rq import STEPS_PER_RUN, Bench, BenchError  # noqa: E402


def redis_cpu(redis: Redis) -> float:
    """Seconds of CPU the server used so far."""
    info = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="runs per drain (10 steps each)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, comma-separated")
    parser.add_argument("--worker-class", choices=("simple", "fork"), default="simple")
    args = parser.parse_args(argv)
    url, server = bench_redis()
    redis = Redis.from_url(url)
    bench = Bench(redis, url, args.worker_class)
    steps = args.runs * STEPS_PER_RUN
    print(f"worker_class={args.worker_class} runs={args.runs} steps_per_run={STEPS_PER_RUN}", end=" ")
    print(f"cpus={os.cpu_count()}")
    try:
        for workers in (int(n) for n in args.workers.split(",")):
            before = redis_cpu(redis)
            drained, _ = bench.flow_drain(args.runs, workers, count_commands=False)
            # The snapshot spans the workers' start and stop too (a little more than the drain).
            used = redis_cpu(redis) - before
            print(
                f"workers={workers} steps_per_s={steps / drained.seconds:.1f} "
                f"redis_cpu_us_per_step={used / (steps + args.runs) * 1e6:.0f} "
                f"redis_core_share={used / drained.seconds:.2f} machine_load={os.getloadavg()[0]:.2f}",
                flush=True,
            )
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
