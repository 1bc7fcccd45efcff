"""Benchmark: run history at scale — list and detail latency over many stored runs, a large ForEach,
Redis bytes per finished run, and Redis CPU per step against raw RQ jobs.

Run as ``python bench/store_scale.py [--max-runs N] [--no-floor-foreach] [--max-own-bytes B]
[--no-floor-bytes]``;
prints one ``name=value`` line per figure, then a summary, and exits 1 when a floor fails
(naming it) or a run does not end as expected.

What it measures, on its own key prefix ``fjscale<random>:`` and queue ``fjscale<random>-q``:

* **History size.** One real run of a linear 5-step ``Noop`` flow is triggered and drained; the
  rest of the stored runs are written directly with ``RunStore.runs.create_run`` (records only, no
  jobs: 10 flows, 90 % Succeeded, 10 % Failed, spread over the past), up to 10, 10,000 and
  ``--max-runs`` (100,000) runs. At each size: the p50 of ``FlowClient.list_runs(limit=50)``, of
  the same with ``flow_id`` and ``status`` (the real run's flow, ``Succeeded``: every run at the
  10-run size, 9 % of the runs added later), and of ``get_run_detail`` of the real run.
  Floor: each p50 at the largest size within 2x of the 10-run one. A 10-run history fills only
  10 rows of a page and decoding rows costs more than finding them, so the list floors compare
  pages of 10 (``list_runs(limit=10)``, printed as ``..._page10_...``); the limit-50 figures are
  printed for reference.
* **ForEach.** A ForEach of N ``Noop`` iterations end to end (trigger to drained queue, one
  in-process RQ ``SimpleWorker`` in burst mode), N = 100 and 1,000, each the median of 3 runs.
  Floor: 1,000 under 10x 100 (``--foreach-factor``).
* **Bytes per run.** ``MEMORY USAGE`` (exact: ``SAMPLES 0``) of every key of the real run: its
  own keys (``<prefix>run:<id>*``), and RQ's keys of its jobs (``rq:job:<id>``,
  ``rq:results:<id>``, ``rq:executions:<id>`` when present) found from the job ids on the run
  record. Entries the run adds to shared keys (indexes, the jobs hash) are not included.
  Ceiling: own bytes ≤ ``--max-own-bytes`` (2048, the goal of issue 15; 1960 today).
* **Redis CPU.** ``used_cpu_sys + used_cpu_user`` of ``INFO cpu`` before and after triggering
  and draining ``--cpu-runs`` runs of a linear 10-step ``Noop`` flow, per step; the same around
  enqueueing (one by one) and draining 10x as many raw RQ no-op jobs, per job. Report only: the
  server's figure includes every other client of the same Redis and its own cron, so the rate
  measured over one idle second just before is printed, and figures with that rate times the
  phase's duration taken off (``..._net``).

Cleanup: every key under its prefix, RQ's keys of its jobs, and its queue's, registries' and
worker's keys (they carry the token). It never flushes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from rq import Queue  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from bench.space import bench_redis, remove_space  # noqa: E402
from flowjobs.client import FlowClient  # noqa: E402
from flowjobs.core.clock import utcnow  # noqa: E402
from flowjobs.core.handlers import HandlerRegistry  # noqa: E402
from flowjobs.core.job_calls import trigger_job_id  # noqa: E402
from flowjobs.core.keys import Keys  # noqa: E402
from flowjobs.core.manifest import FlowDefinition  # noqa: E402
from flowjobs.core.records import FlowRunRecord  # noqa: E402
from flowjobs.core.registry import FlowRegistry  # noqa: E402
from flowjobs.core.statuses import RunStatus  # noqa: E402
from flowjobs.factory import engine_from_settings  # noqa: E402
from flowjobs.jobs import install_engine  # noqa: E402
from flowjobs.logs import configure_logging  # noqa: E402
from flowjobs.settings import Settings  # noqa: E402
from flowjobs.worker import build_worker  # noqa: E402

NOOP_FUNC = "bench.store_scale.noop"
SIZES = (10, 10_000, 100_000)
SEED_FLOWS = 10
SEED_BATCH = 2_000
LATENCY_FACTOR = 2.0
FLOOR_FIGURES = ("list_page10", "list_flow_status_page10", "detail")
FOREACH_SIZES = (100, 1_000)
#: End-to-end runs per ForEach size; the median counts.
FOREACH_TRIES = 3
FOREACH_FACTOR = 10.0
#: Default of ``--max-own-bytes`` (a ceiling, despite the name the floors share).
OWN_BYTES_FLOOR = 2048
CPU_STEPS_PER_RUN = 10


def noop() -> None:
    """The raw RQ job: does nothing."""


class BenchError(RuntimeError):
    """A run did not end as expected."""


def linear(name: str, steps: int) -> FlowDefinition:
    """A flow of ``steps`` Noop steps, each after the previous one."""
    spec: dict[str, dict[str, Any]] = {"s1": {"type": "Noop"}}
    for i in range(2, steps + 1):
        spec[f"s{i}"] = {"type": "Noop", "run_after": [f"s{i - 1}"]}
    return FlowDefinition.model_validate({"id": str(uuid.uuid4()), "name": name, "steps": spec})


def for_each(name: str) -> FlowDefinition:
    """A ForEach over the trigger's ``items``, one Noop child per item."""
    loop = {"type": "ForEach", "forEach": "@triggerBody()?.items", "steps": {"child": {"type": "Noop"}}}
    steps = {"loop": loop}
    return FlowDefinition.model_validate({"id": str(uuid.uuid4()), "name": name, "steps": steps})


def p50_ms(call: Callable[[], object], samples: int) -> float:
    """Median wall time of ``call`` in milliseconds (after one warm-up call)."""
    call()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


@dataclass
class Bench:
    """The benchmark's corner of Redis: token, flows, client, in-process worker, and cleanup."""

    redis: Redis
    url: str
    token: str = field(default_factory=lambda: f"fjscale{uuid.uuid4().hex[:10]}")
    flows: FlowRegistry = field(default_factory=FlowRegistry)
    raw_job_ids: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        handlers = HandlerRegistry()
        handlers.register("Noop", lambda ctx, inputs: None)
        settings = Settings(redis_url=self.url, queue=self.queue, key_prefix=self.prefix, handler_modules="")
        install_engine(engine_from_settings(settings, redis=self.redis, handlers=handlers))
        self.client = FlowClient(self.redis, self.flows, self.queue, key_prefix=self.prefix)

    @property
    def prefix(self) -> str:
        return f"{self.token}:"

    @property
    def queue(self) -> str:
        return f"{self.token}-q"

    def report(self, name: str, value: float | int, unit_format: str = ".3f") -> None:
        text = f"{value:{unit_format}}" if isinstance(value, float) else str(value)
        self.figures[name] = text
        print(f"{name}={text}", flush=True)

    def drain(self) -> None:
        """Run every queued job in this process (RQ SimpleWorker, burst)."""
        build_worker(self.redis, self.queue, simple=True, name=f"{self.token}-w").work(
            burst=True, with_scheduler=False, logging_level="WARNING"
        )

    def run_to_end(self, definition: FlowDefinition, data: Any = None) -> UUID:
        """Trigger one run, drain the queue, check it succeeded; returns its id."""
        self.flows.add(definition)
        run_id = self.client.trigger(definition.name, data=data).run_id
        self.drain()
        run = self.client.get_run(run_id)
        if run is None or run.status is not RunStatus.Succeeded:
            status = run.status.value if run else "missing"
            raise BenchError(f"run {run_id} of {definition.name} ended {status}")
        return run_id

    # -- history size --------------------------------------------------------------------------

    def seed(self, count: int, target: FlowRunRecord, first: bool) -> None:
        """Store ``count`` more run records with ``RunStore.runs.create_run`` (records only, no jobs).

        The first batch is like the target run (its flow, Succeeded), so the filtered list has a
        full page of 10 at the smallest size; later ones spread over ``SEED_FLOWS`` flows, 10 %
        of them Failed.
        """
        store = self.client.store
        flow_ids = [target.flow_id, *(uuid.uuid4() for _ in range(SEED_FLOWS - 1))]
        now = utcnow()
        for i in range(count):
            run_id = uuid.uuid4()
            flow_index = 0 if first else i % SEED_FLOWS
            failed = not first and (i // SEED_FLOWS) % 10 == 0
            started = now - timedelta(seconds=60 + i % 86400, microseconds=i)
            record = FlowRunRecord(
                id=run_id,
                flow_id=flow_ids[flow_index],
                flow_name=target.flow_name if flow_index == 0 else f"{self.token}-seed-{flow_index}",
                status=RunStatus.Failed if failed else RunStatus.Succeeded,
                trigger_key="manual",
                trigger_data_json=json.dumps({"orderId": i}),
                trigger_headers={},
                background_job_id=trigger_job_id(run_id),
                started_at=started,
                completed_at=started + timedelta(seconds=1),
                flow_version=target.flow_version,
                manifest_hash=target.manifest_hash,
            )
            store.runs.create_run(store.runs.new_run(record))

    def history(self, max_runs: int, samples: int) -> dict[int, dict[str, float]]:
        """List and detail p50 at each history size; also the bytes of the real run."""
        definition = linear(f"{self.token}-linear5", 5)
        run_id = self.run_to_end(definition)
        self.run_bytes(run_id)
        target = self.client.get_run(run_id)
        assert target is not None
        sizes = sorted({min(size, max_runs) for size in SIZES})
        stored = 1
        out: dict[int, dict[str, float]] = {}
        for size in sizes:
            start = time.perf_counter()
            self.seed(size - stored, target, first=stored == 1)
            if size > 10:
                self.report(f"seed_seconds_{size}", time.perf_counter() - start, ".1f")
            stored = size
            figures: dict[str, float] = {}
            for limit, page in ((50, ""), (10, "_page10")):
                list_runs = partial(self.client.list_runs, limit=limit)
                figures[f"list{page}"] = p50_ms(list_runs, samples)
                figures[f"list_flow_status{page}"] = p50_ms(
                    partial(list_runs, flow_id=target.flow_id, status=RunStatus.Succeeded), samples
                )
            figures["detail"] = p50_ms(lambda: self.client.get_run_detail(run_id), samples)
            for name, value in figures.items():
                self.report(f"runs_{size}_{name}_p50_ms", value)
            rows = self.client.list_runs(flow_id=target.flow_id, status=RunStatus.Succeeded, limit=50)
            self.report(f"runs_{size}_list_flow_status_rows", len(rows))
            out[size] = figures
        return out

    # -- bytes ---------------------------------------------------------------------------------

    def run_bytes(self, run_id: UUID) -> None:
        """MEMORY USAGE of the run's own keys and of RQ's keys of its jobs, reported separately."""
        run = self.client.get_run_detail(run_id)
        assert run is not None
        own = sorted(self.redis.scan_iter(match=f"{Keys(self.prefix).run(run_id)}*", count=1000))
        job_ids = [run.background_job_id or ""] + [
            a.job_id or "" for step in run.steps or [] for a in step.attempts or []
        ]
        rq_keys = [f"rq:{kind}:{job_id}" for job_id in job_ids for kind in ("job", "results", "executions")]

        def usage(keys: Sequence[bytes | str]) -> list[int]:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.memory_usage(key, samples=0)
                return [int(n or 0) for n in pipe.execute()]  # None: no such key

        own_bytes, rq_bytes = usage(own), usage(rq_keys)
        run_prefix = Keys(self.prefix).run(run_id)
        for key, size in zip(own, own_bytes, strict=True):
            part = _text(key)[len(run_prefix) :].lstrip(":") or "run"
            self.report(f"own_bytes[{part}]", size)
        self.report("own_keys_per_run", len(own))
        self.report("own_bytes_per_run", sum(own_bytes))
        self.report("rq_keys_per_run", sum(1 for n in rq_bytes if n))
        self.report("rq_bytes_per_run", sum(rq_bytes))
        self.report("rq_jobs_per_run", len(job_ids))

    # -- ForEach -------------------------------------------------------------------------------

    def foreach_seconds(self, items: int, tries: int = FOREACH_TRIES) -> float:
        """Median of ``tries`` end-to-end runs of an ``items``-item ForEach. Not the best: on a
        shared machine a short run is sometimes twice as quick as usual, and the long one
        averages such moments out, so best-of compared a lucky small run with a typical large one."""
        definition = for_each(f"{self.token}-foreach{items}")
        times = []
        for _ in range(tries):
            start = time.perf_counter()
            self.run_to_end(definition, data={"items": list(range(items))})
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    # -- Redis CPU -----------------------------------------------------------------------------

    def server_cpu(self) -> float:
        info: dict[str, Any] = self.redis.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def idle_cpu_per_s(self, seconds: float = 1.0) -> float:
        """The server's CPU rate while this benchmark sends nothing (other clients, cron)."""
        before = self.server_cpu()
        time.sleep(seconds)
        return (self.server_cpu() - before) / seconds

    def cpu_used(self, work: Callable[[], object]) -> tuple[float, float]:
        """Server CPU seconds used while ``work`` ran, and its wall time in seconds."""
        before, start = self.server_cpu(), time.perf_counter()
        work()
        return self.server_cpu() - before, time.perf_counter() - start

    def flow_cpu(self, runs: int) -> tuple[float, float]:
        """``cpu_used`` of triggering and draining ``runs`` linear runs."""
        definition = linear(f"{self.token}-linear{CPU_STEPS_PER_RUN}", CPU_STEPS_PER_RUN)
        self.flows.add(definition)
        run_ids: list[UUID] = []

        def work() -> None:
            run_ids.extend(self.client.trigger(definition.name).run_id for _ in range(runs))
            self.drain()

        used = self.cpu_used(work)
        ended = [self.client.get_run(r) for r in run_ids]
        bad = [r for r in ended if r is None or r.status is not RunStatus.Succeeded]
        if bad:
            raise BenchError(f"{len(bad)}/{runs} runs of the CPU phase did not end Succeeded")
        return used

    def rq_cpu(self, jobs: int) -> tuple[float, float]:
        """``cpu_used`` of enqueueing (one by one) and draining ``jobs`` raw no-op jobs."""
        queue = Queue(self.queue, connection=self.redis, serializer=JSONSerializer)
        ids = [f"{self.token}-raw-{i}" for i in range(jobs)]
        self.raw_job_ids.extend(ids)

        def work() -> None:
            for job_id in ids:
                queue.enqueue(NOOP_FUNC, job_id=job_id)
            self.drain()

        used = self.cpu_used(work)
        failed = self.redis.zcard(f"rq:failed:{self.queue}")
        if failed:
            raise BenchError(f"{failed} raw RQ job(s) failed")
        return used

    # -- cleanup -------------------------------------------------------------------------------

    def cleanup(self) -> None:
        install_engine(None)
        remove_space(
            self.redis, prefix=self.prefix, token=self.token, queue=self.queue, job_ids=self.raw_job_ids
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-runs", type=int, default=SIZES[-1],
                        help="largest history size (stored runs); CI uses a smaller one")
    parser.add_argument("--samples", type=int, default=50, help="timed calls per latency figure")
    parser.add_argument("--cpu-runs", type=int, default=30,
                        help=f"{CPU_STEPS_PER_RUN}-step runs of the CPU phase (raw RQ jobs: 10x as many)")
    parser.add_argument("--foreach-factor", type=float, default=FOREACH_FACTOR,
                        help="floor: the large ForEach must take less than this times the small one "
                        "(linear cost puts it just under 10 on this machine; quadratic near 100)")
    parser.add_argument("--no-floor-foreach", action="store_true",
                        help="report the ForEach figures without failing on their floor")
    parser.add_argument("--max-own-bytes", type=int, default=OWN_BYTES_FLOOR, metavar="B",
                        help="ceiling: flowjobs' own bytes per finished linear 5-step run; exit 1 above")
    parser.add_argument("--no-floor-bytes", action="store_true",
                        help="report bytes per run without failing on their floor")
    args = parser.parse_args(argv)
    if args.max_runs < SIZES[0] or args.samples < 1 or args.cpu_runs < 1:
        parser.error(f"--max-runs must be at least {SIZES[0]}; --samples and --cpu-runs at least 1")
    return args


def floors(args: argparse.Namespace, bench: Bench, history: dict[int, dict[str, float]]) -> list[str]:
    """The floors that failed, each in words; skipped ones are printed as such."""
    failed: list[str] = []
    smallest, largest = min(history), max(history)
    for name in FLOOR_FIGURES:
        base, value = history[smallest][name], history[largest][name]
        if value > LATENCY_FACTOR * base:
            failed.append(f"latency: {name} p50 {value:.3f} ms at {largest} runs > {LATENCY_FACTOR:g}x "
                          f"{base:.3f} ms at {smallest} runs")
    small, large = (float(bench.figures[f"foreach_{n}_seconds"]) for n in FOREACH_SIZES)
    if large >= args.foreach_factor * small:
        line = (f"foreach: {FOREACH_SIZES[1]} items took {large:.2f} s >= {args.foreach_factor:g}x "
                f"{small:.2f} s for {FOREACH_SIZES[0]}")
        if args.no_floor_foreach:
            print(f"floor skipped (--no-floor-foreach): {line}")
        else:
            failed.append(line)
    own = int(bench.figures["own_bytes_per_run"])
    if own > args.max_own_bytes:
        line = (f"bytes: flowjobs' own keys of a finished linear 5-step run take {own} B > "
                f"{args.max_own_bytes} B (--max-own-bytes)")
        if args.no_floor_bytes:
            print(f"floor skipped (--no-floor-bytes): {line}")
        else:
            failed.append(line)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url, server = bench_redis()
    load_before = os.getloadavg()[0]
    configure_logging("console", "warning")
    bench = Bench(Redis.from_url(url), url)
    try:
        history = bench.history(args.max_runs, args.samples)
        for items in FOREACH_SIZES:
            bench.report(f"foreach_{items}_seconds", bench.foreach_seconds(items))
        bench.report("foreach_ratio", float(bench.figures[f"foreach_{FOREACH_SIZES[1]}_seconds"])
                     / float(bench.figures[f"foreach_{FOREACH_SIZES[0]}_seconds"]), ".2f")
        idle = bench.idle_cpu_per_s()
        steps = args.cpu_runs * CPU_STEPS_PER_RUN
        per_unit: dict[str, tuple[float, float]] = {}
        for name, (used, wall) in (("step", bench.flow_cpu(args.cpu_runs)), ("rq_job", bench.rq_cpu(steps))):
            per_unit[name] = (used / steps * 1e6, max(used - idle * wall, 0.0) / steps * 1e6)
        bench.report("redis_cpu_idle_ms_per_s", idle * 1000, ".2f")
        for name, (raw, net) in per_unit.items():
            bench.report(f"redis_cpu_us_per_{name}", raw, ".1f")
            bench.report(f"redis_cpu_us_per_{name}_net", net, ".1f")
        bench.report("redis_cpu_ratio", per_unit["step"][0] / per_unit["rq_job"][0], ".2f")
        bench.report("redis_cpu_ratio_net", per_unit["step"][1] / max(per_unit["rq_job"][1], 1e-9), ".2f")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
        if server is not None:
            server.stop()
    failed = floors(args, bench, history)
    smallest, largest = min(history), max(history)
    latency = ", ".join(
        f"{name} {history[largest][name]:.2f} ms (at {smallest} runs {history[smallest][name]:.2f})"
        for name in ("list", *FLOOR_FIGURES)
    )
    print(f"summary: p50 with {largest} stored runs: {latency}; "
          f"ForEach {FOREACH_SIZES[1]}/{FOREACH_SIZES[0]} items = {bench.figures['foreach_ratio']}x; "
          f"{bench.figures['own_bytes_per_run']} B own + {bench.figures['rq_bytes_per_run']} B RQ per run; "
          f"Redis CPU {bench.figures['redis_cpu_us_per_step']} us/step vs "
          f"{bench.figures['redis_cpu_us_per_rq_job']} us/RQ job")
    if load_before > 0.5:
        print(f"note: 1-min load average was {load_before:.2f} at start: other processes on this "
              f"{os.cpu_count()}-core machine may have competed for CPU (figures vary from run to run)")
    for line in failed:
        print(f"floor failed: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
