"""Benchmark: one recovery pass over a large healthy backlog, where there is nothing to repair.

Run as ``python bench/recovery_scale.py [--runs N] [--floor-seconds S]``; prints one ``name=value``
line per figure and exits 1 when the floor fails (naming it) or the pass repaired something.

What it measures, on its own key prefix ``fjrecov<random>:`` and queue ``fjrecov<random>-q``:

* **Backlog.** N Pending runs of a one-step ``Noop`` flow, triggered with ``FlowClient`` (each
  trigger job queued), and N Running runs whose step is dispatched (each triggered, started with
  ``RunStore.runs.start_run`` and planned with ``Engine.continue_run``, so its step job is queued).
  No worker runs: every job stays queued, so a correct pass repairs nothing.
* **Pass.** One ``flowjobs.recovery.recover`` pass with ``grace_seconds=0`` (so every run and
  dispatched step counts as a candidate: N Pending runs whose trigger job is looked up, N
  dispatched steps whose job is looked up), after one untimed warm-up pass (which loads the
  Lua scripts into Redis and the code into the CPU's caches), the quickest of three. Printed:
  its wall time as ``recovery_pass_seconds_<N>``, and ``recovery_runs_per_second`` (2N runs
  looked at per second).
  Floor: the pass within 0.5 s per 5,000 Pending runs (``--floor-seconds``; ``--runs`` scales it).

Cleanup: every key under its prefix, RQ's keys of its jobs, and its queue's keys. It never flushes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import bench_redis, remove_space  # noqa: E402
from flowjobs.client import FlowClient  # noqa: E402
from flowjobs.core.clock import utcnow  # noqa: E402
from flowjobs.core.handlers import HandlerRegistry  # noqa: E402
from flowjobs.core.manifest import FlowDefinition  # noqa: E402
from flowjobs.core.registry import FlowRegistry  # noqa: E402
from flowjobs.engine import Engine  # noqa: E402
from flowjobs.factory import engine_from_settings  # noqa: E402
from flowjobs.logs import configure_logging  # noqa: E402
from flowjobs.recovery import recover  # noqa: E402
from flowjobs.settings import Settings  # noqa: E402

DEFAULT_RUNS = 5_000
#: The floor: seconds a pass may take per 5,000 Pending runs (and as many dispatched steps).
FLOOR_SECONDS_PER_5000 = 0.5
#: Timed passes; the quickest counts.
PASSES = 3


class BenchError(RuntimeError):
    """The backlog is not what the benchmark meant to build, or the pass repaired something."""


def seed(client: FlowClient, engine: Engine, flow_name: str, runs: int) -> None:
    """``runs`` Pending runs with their trigger job queued, and ``runs`` Running runs with their one
    step dispatched (its job queued)."""
    for _ in range(runs):
        client.trigger(flow_name)
    for _ in range(runs):
        run_id = str(client.trigger(flow_name).run_id)
        started = engine.store.runs.start_run(run_id)
        if started is None:
            raise BenchError(f"run {run_id} could not be started")
        engine.continue_run(run_id, started[1])


def timed_pass(engine: Engine) -> float:
    """Wall time of one recovery pass, which must find nothing to repair."""
    start = time.perf_counter()
    repaired = recover(engine, grace_seconds=0)
    seconds = time.perf_counter() - start
    if repaired:
        raise BenchError(f"the pass repaired {repaired} thing(s) in a healthy backlog")
    return seconds


def measure(redis: Redis, url: str, runs: int) -> float:
    """Build the backlog in a space of its own, time one pass over it, and remove the space."""
    token = f"fjrecov{uuid.uuid4().hex[:10]}"
    prefix, queue = f"{token}:", f"{token}-q"
    handlers = HandlerRegistry()
    handlers.register("Noop", lambda ctx, inputs: None)
    settings = Settings(redis_url=url, queue=queue, key_prefix=prefix, handler_modules="")
    engine = engine_from_settings(settings, redis=redis, handlers=handlers)
    definition = FlowDefinition.model_validate(
        {"id": str(uuid.uuid4()), "name": f"{token}-one", "steps": {"a": {"type": "Noop"}}}
    )
    client = FlowClient(redis, FlowRegistry([definition]), queue, key_prefix=prefix)
    try:
        start = time.perf_counter()
        seed(client, engine, definition.name, runs)
        print(f"seed_seconds={time.perf_counter() - start:.1f}", flush=True)
        # Candidates are the runs and steps due strictly before a pass's start (millisecond scores):
        # let the clock move past the last one seeded, then count them as the pass will see them.
        time.sleep(0.01)
        now = utcnow()
        pending_runs = len(engine.store.overdue.idle_runs(now))
        dispatched = len(engine.store.overdue.overdue_pending(now))
        if (pending_runs, dispatched) != (runs, runs):
            raise BenchError(f"backlog: {pending_runs} Pending runs, {dispatched} dispatched steps")
        print(f"recovery_pending_runs={pending_runs}")
        print(f"recovery_dispatched_steps={dispatched}")
        timed_pass(engine)  # warm-up
        # Best of three: the pass repairs nothing, so each one does the same work, and a shared
        # machine's noise only ever adds time to it.
        return min(timed_pass(engine) for _ in range(PASSES))
    finally:
        remove_space(redis, prefix=prefix, token=token, queue=queue)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help="Pending runs in the backlog (and as many Running runs with a dispatched step)")
    parser.add_argument("--floor-seconds", type=float, default=FLOOR_SECONDS_PER_5000, metavar="S",
                        help="the floor: seconds a pass may take per 5,000 Pending runs (scaled by --runs)")
    args = parser.parse_args(argv)
    if args.runs < 1 or not args.floor_seconds > 0:
        parser.error("--runs must be at least 1 and --floor-seconds above 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url, server = bench_redis()
    configure_logging("console", "warning")
    try:
        seconds = measure(Redis.from_url(url), url, args.runs)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
    print(f"recovery_pass_seconds_{args.runs}={seconds:.3f}")
    print(f"recovery_runs_per_second={2 * args.runs / seconds:.0f}")
    floor = args.floor_seconds * args.runs / 5_000
    if seconds >= floor:
        print(f"floor failed: a recovery pass over {args.runs} Pending runs and {args.runs} dispatched "
              f"steps took {seconds:.3f} s >= {floor:.3f} s")
        return 1
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
