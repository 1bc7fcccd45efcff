"""Profile: where a flowjobs step's time goes, against a raw RQ job measured in the same run.

Run as ``python bench/profile_steps.py [--runs M] [--rounds R] [--cprofile N] [--max-round-trips X]
[--max-commands X] [--max-python-us X] [--max-python-ratio X] [--max-redis-cpu-ratio X]``; prints
``name=value`` lines and exits 1 when a figure is above its ceiling (each ceiling is off unless given).

Each of R rounds (default 3; raw first on even rounds, flowjobs first on odd ones) has two phases,
each drained in this process by a burst SimpleWorker (no scheduler) on its own queue under the
prefix ``fjprof<random>``:

* flowjobs: M runs (default 100) of a linear 10-step ``Noop`` flow are triggered, then measured
  while flowjobs' SimpleWorker drains them; per step, the trigger jobs' share included (as in
  ``steps_vs_rq.py``), and each step's enqueue of the next one inside the measurement;
* raw RQ: 10·M jobs of ``bench.steps_vs_rq.noop`` (JSON serializer), measured while they are
  enqueued one by one (``Queue.enqueue``) and drained by RQ's own ``SimpleWorker``; per job.

Figures (each the median of the rounds; ``..._per_step`` for flowjobs, ``..._per_rq_job`` raw):

* ``round_trips``: requests this process sent to Redis (``Connection.send_packed_command`` calls:
  a pipeline or a script call is one);
* ``commands`` and ``server_usec``: ``INFO commandstats`` deltas (calls and ``usec``), all
  commands but the ``INFO`` itself; for flowjobs also ``evalsha_*`` (its Lua scripts alone) and
  the top commands by server time;
* ``python_cpu_usec``: this process's CPU time (``time.process_time``);
* ``redis_cpu_usec``: the server's ``used_cpu_sys + used_cpu_user`` (``INFO cpu``);
* ``wall_usec``; and ``python_cpu_ratio`` and ``redis_cpu_ratio``: step ÷ raw RQ job.

Round-trips are counted by this process, so they are exact; commands are counted by the server,
and every other client of the same Redis adds to them, so ``--max-commands`` is checked against
the round with the fewest (printed with the others as ``commands_per_step_rounds min= median=
max=``). CPU figures vary with whatever else this machine and this Redis serve, which is why they
are guarded as ratios to the raw job of the same run (the median round). With
``--cprofile N`` the first round's flowjobs drain runs under cProfile and the N functions with the
most own time are printed (cProfile slows Python down: that round's figures include its overhead).
Cleanup: ``bench/space.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis
from redis.connection import Connection
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import bench_redis, remove_space  # noqa: E402
from bench.steps_vs_rq import NOOP_FUNC, STEPS_PER_RUN, linear_flow  # noqa: E402
from flowjobs.client import FlowClient  # noqa: E402
from flowjobs.core.handlers import HandlerRegistry  # noqa: E402
from flowjobs.core.registry import FlowRegistry  # noqa: E402
from flowjobs.core.statuses import RunStatus  # noqa: E402
from flowjobs.factory import engine_from_settings  # noqa: E402
from flowjobs.jobs import install_engine  # noqa: E402
from flowjobs.logs import configure_logging  # noqa: E402
from flowjobs.settings import Settings  # noqa: E402
from flowjobs.worker import build_worker  # noqa: E402


@contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Count ``send_packed_command`` calls of every connection of this process meanwhile."""
    counter = [0]
    original: Any = Connection.send_packed_command

    def counted(self: Connection, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        original(self, command, check_health)

    setattr(Connection, "send_packed_command", counted)  # noqa: B010 (patching a method)
    try:
        yield counter
    finally:
        setattr(Connection, "send_packed_command", original)  # noqa: B010


@dataclass
class Sample:
    """What one drain cost, in total."""

    round_trips: int
    python_cpu: float
    wall: float
    redis_cpu: float
    stats: dict[str, tuple[int, int]]  # command -> (calls, usec)

    def per_unit(self, units: int) -> dict[str, float]:
        return {
            "round_trips": self.round_trips / units,
            "commands": sum(c for c, _ in self.stats.values()) / units,
            "server_usec": sum(u for _, u in self.stats.values()) / units,
            "python_cpu_usec": self.python_cpu / units * 1e6,
            "redis_cpu_usec": self.redis_cpu / units * 1e6,
            "wall_usec": self.wall / units * 1e6,
        }


def commandstats(redis: Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats``: command → (calls, usec)."""
    stats: dict[str, Any] = redis.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}


def server_cpu(redis: Redis) -> float:
    info: dict[str, Any] = redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(redis: Redis, work: Callable[[], object], profiler: cProfile.Profile | None = None) -> Sample:
    """Run ``work`` and return its cost (this process's requests, the server's counters)."""
    before, cpu_before = commandstats(redis), server_cpu(redis)
    with counting_round_trips() as trips:
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        work()
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sent = trips[0]
    cpu_after, after = server_cpu(redis), commandstats(redis)
    zero = (0, 0)
    delta = {k: (c - before.get(k, zero)[0], u - before.get(k, zero)[1]) for k, (c, u) in after.items()}
    delta.pop("info", None)
    return Sample(sent, cpu, wall, cpu_after - cpu_before, {k: v for k, v in delta.items() if v[0]})


class Profile:
    """The benchmark's corner of Redis (prefix, queues, engine, worker names) and its two phases."""

    def __init__(self, redis: Redis, url: str, runs: int) -> None:
        self.redis, self.runs = redis, runs
        self.token = f"fjprof{uuid.uuid4().hex[:10]}"
        self.prefix, self.queue, self.raw_queue = f"{self.token}:", f"{self.token}-q", f"{self.token}-raw"
        self.raw_job_ids: list[str] = []
        handlers = HandlerRegistry()
        handlers.register("Noop", lambda ctx, inputs: None)
        settings = Settings(redis_url=url, queue=self.queue, key_prefix=self.prefix, handler_modules="")
        self.definition = linear_flow(f"{self.token}-linear", STEPS_PER_RUN)
        self.client = FlowClient(redis, FlowRegistry([self.definition]), self.queue, key_prefix=self.prefix)
        install_engine(engine_from_settings(settings, redis=redis, handlers=handlers))

    def flow(self, index: int, profiler: cProfile.Profile | None) -> Sample:
        """Trigger ``runs`` runs (not measured), then measure flowjobs' SimpleWorker draining them."""
        run_ids = [self.client.trigger(self.definition.name).run_id for _ in range(self.runs)]
        worker = build_worker(self.redis, self.queue, simple=True, name=f"{self.token}-w{index}")
        sample = measure(self.redis, lambda: worker.work(burst=True, with_scheduler=False,
                                                         logging_level="WARNING"), profiler)
        runs_read = [self.client.get_run(r) for r in run_ids]
        bad = [r for r in runs_read if r is None or r.status is not RunStatus.Succeeded]
        if bad:
            raise SystemExit(f"error: {len(bad)} run(s) did not succeed")
        return sample

    def raw(self, index: int) -> Sample:
        """Measure enqueueing ``runs``·10 raw no-op jobs one by one and RQ's SimpleWorker draining them."""
        queue = Queue(self.raw_queue, connection=self.redis, serializer=JSONSerializer)
        ids = [f"{self.raw_queue}-{index}-{i}" for i in range(self.runs * STEPS_PER_RUN)]
        self.raw_job_ids.extend(ids)
        worker = SimpleWorker([queue], connection=self.redis, serializer=JSONSerializer,
                              name=f"{self.token}-raw-w{index}")

        def work() -> None:
            for job_id in ids:
                queue.enqueue(NOOP_FUNC, job_id=job_id)
            worker.work(burst=True, with_scheduler=False, logging_level="WARNING")

        sample = measure(self.redis, work)
        failed = self.redis.zcard(f"rq:failed:{self.raw_queue}")
        if failed:
            raise SystemExit(f"error: {failed} raw RQ job(s) failed")
        return sample

    def cleanup(self) -> None:
        install_engine(None)
        remove_space(self.redis, prefix=self.prefix, token=self.token, queue=self.queue,
                     job_ids=self.raw_job_ids)
        self.redis.srem("rq:queues", f"rq:queue:{self.raw_queue}")


#: Figures printed with their spread over the rounds.
SPREAD = ("commands_per_step", "python_cpu_ratio", "redis_cpu_ratio")
#: Ceiling options: (option dest, figure, unit). Commands are checked on the least disturbed round:
#: other clients of the same Redis can only add to the server's count.
CEILINGS = (
    ("max_round_trips", "round_trips_per_step", ""),
    ("max_commands", "commands_per_step_min", ""),
    ("max_python_us", "python_cpu_usec_per_step", " us"),
    ("max_python_ratio", "python_cpu_ratio", "x"),
    ("max_redis_cpu_ratio", "redis_cpu_ratio", "x"),
)


def run(redis: Redis, url: str, runs: int, rounds: int, top: int) -> dict[str, float]:
    """Every round's two phases (see the module docstring), printed; returns the median figures
    (and ``<name>_min`` for ``SPREAD``). The space is removed at the end."""
    bench = Profile(redis, url, runs)
    steps = runs * STEPS_PER_RUN
    flows: list[Sample] = []
    raws: list[Sample] = []
    profiler = cProfile.Profile() if top else None
    try:
        for index in range(rounds):
            if index % 2:
                flows.append(bench.flow(index, None))
                raws.append(bench.raw(index))
            else:
                raws.append(bench.raw(index))
                flows.append(bench.flow(index, profiler if index == 0 else None))
    finally:
        bench.cleanup()
    per_round: list[dict[str, float]] = []
    for flow, raw in zip(flows, raws, strict=True):
        step, job = flow.per_unit(steps), raw.per_unit(steps)
        figures = {f"{k}_per_step": v for k, v in step.items()}
        figures |= {f"{k}_per_rq_job": v for k, v in job.items()}
        figures["evalsha_per_step"] = flow.stats.get("evalsha", (0, 0))[0] / steps
        figures["evalsha_usec_per_step"] = flow.stats.get("evalsha", (0, 0))[1] / steps
        figures["python_cpu_ratio"] = step["python_cpu_usec"] / job["python_cpu_usec"]
        figures["redis_cpu_ratio"] = step["redis_cpu_usec"] / max(job["redis_cpu_usec"], 1e-9)
        per_round.append(figures)
    print(f"runs={runs} steps={steps} (+{runs} trigger jobs) rq_jobs={steps} rounds={rounds}  "
          f"(figures: medians of the rounds)")
    medians: dict[str, float] = {}
    for name in per_round[0]:
        values = [figures[name] for figures in per_round]
        medians[name] = statistics.median(values)
        digits = 2 if "ratio" in name or "evalsha_per" in name else 0 if "usec" in name else 1
        print(f"{name}={medians[name]:.{digits}f}")
        if name in SPREAD:
            print(f"{name}_rounds min={min(values):.{digits}f} median={medians[name]:.{digits}f} "
                  f"max={max(values):.{digits}f}")
            medians[f"{name}_min"] = min(values)
    stats: dict[str, tuple[int, int]] = {}
    for flow in flows:
        for name, (c, u) in flow.stats.items():
            stats[name] = (stats.get(name, (0, 0))[0] + c, stats.get(name, (0, 0))[1] + u)
    for name, (c, u) in sorted(stats.items(), key=lambda item: -item[1][1])[:8]:
        print(f"  server {name:12} {c / steps / rounds:6.2f} calls/step {u / steps / rounds:7.1f} usec/step")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
        print(out.getvalue())
    return medians


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100, help="linear 10-step runs to drain per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of both phases")
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="profile the first flowjobs drain; print the N functions with the most own time")
    parser.add_argument("--max-round-trips", type=float, metavar="X", help="ceiling: round-trips per step")
    parser.add_argument("--max-commands", type=float, metavar="X", help="ceiling: Redis commands per step")
    parser.add_argument("--max-python-us", type=float, metavar="X",
                        help="ceiling: worker Python CPU us per step")
    parser.add_argument("--max-python-ratio", type=float, metavar="X",
                        help="ceiling: worker Python CPU per step / per raw RQ job")
    parser.add_argument("--max-redis-cpu-ratio", type=float, metavar="X",
                        help="ceiling: Redis CPU per step / per raw RQ job")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.rounds < 1:
        parser.error("--runs and --rounds must be at least 1")
    configure_logging("console", "warning")
    url, server = bench_redis()
    try:
        medians = run(Redis.from_url(url), url, args.runs, args.rounds, args.cprofile)
    finally:
        if server is not None:
            server.stop()
    exceeded = [f"{figure} {medians[figure]:.2f}{unit} > {limit:g}{unit}"
                for dest, figure, unit in CEILINGS if (limit := getattr(args, dest)) is not None
                and medians[figure] > limit]
    for line in exceeded:
        print(f"ceiling exceeded: {line}")
    return 1 if exceeded else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
