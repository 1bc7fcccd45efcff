"""Benchmark: flowjobs step throughput and latency against raw RQ jobs, RQ's own ``depends_on``
chains and Celery's ``chain``, on the same Redis, in interleaved rounds.

Run as ``python bench/steps_vs_rq.py [--runs M] [--jobs N] [--rounds R] [--worker-class simple|fork]
[--latency-samples K] [--celery solo|prefork|off] [--celery-db D] [--duties] [--floor F]``;
exits 1 when the median ``ratio`` (flowjobs steps/s ÷ RQ jobs/s, 2 workers) is below the floor,
when a run does not end Succeeded, when a drain fails, or when the Celery peer cannot be set up.

Rounds: every phase below runs once per round, R rounds (default 5), in the listed order on odd
rounds and reversed on even ones, so none always runs first (or last, on a machine whose load
drifts). Each figure is computed per round from that round's phases (a ratio's two sides come
from the same round); the printed ``name=value`` is the median of the rounds, and the figures
that carry the goals of issue 15 are also printed as ``<name>_rounds min= median= max=``, after
one ``round i:`` line per round.

Drains (each on its own new queue ``fjbench<random>-<phase>-<n>``):

* Work is queued up front with no worker running: N raw jobs (``noop()`` below, JSON serializer,
  RQ defaults otherwise), or M runs of a linear 10-step ``Noop`` flow triggered with ``FlowClient``
  (this only enqueues the M trigger jobs). The job ids are then taken off the RQ queue list
  (``LRANGE`` + ``DEL`` in one transaction) so nothing can start yet.
* 1 or 2 worker subprocesses (this file with ``--_worker``; engine installed with a ``Noop``
  handler, ``with_scheduler=False``, this module pre-imported so forking work-horses need not import
  ``noop``'s module per job) are started non-burst on the now-empty queue. The parent
  waits until every worker reports ``idle`` and its connection sits blocked in ``BLMOVE``, so
  process start-up, imports and RQ's first maintenance pass are outside the measurement.
* The clock starts just before one ``RPUSH`` puts every job id back (waking the workers) and
  stops when RQ's finished registry of the queue holds every expected job (N raw jobs; M trigger
  + 10·M step jobs for flowjobs), polled every 10 ms. Non-burst workers cannot exit early while
  a flowjobs queue is momentarily empty; the parent stops them (SIGTERM) afterwards.
* ``flowjobs_steps_per_s`` counts only the 10·M step jobs but divides by the whole drain time,
  trigger jobs included. ``ratio`` and ``ratio_1w``: flowjobs steps/s ÷ raw RQ jobs/s with 2 and 1
  workers (``--worker-class``: RQ's ``SimpleWorker`` or the forking ``Worker`` that ``flowjobs
  worker`` runs by default, for both sides).
* Redis commands: the sum of ``calls`` in ``INFO commandstats`` just before the ``RPUSH`` and just
  after the drain of the 1-worker phases, minus the commands this process sent in between (the
  first INFO, the RPUSH, the polls); divided by N raw jobs or by 10·M step jobs (so the per-step
  figure includes the step's own RQ job and a tenth of a trigger job). Other clients of the same
  Redis add to it: their rate is sampled for 0.5 s while the workers are idle and reported when
  it is not negligible.

Peer 1, RQ's own ``depends_on`` chains (goal ``ratio_chain`` >= 1.0): M chains of
``STEPS_PER_RUN`` ``noop()`` jobs, each depending on the previous one (one ``enqueue_many`` per
chain, RQ's default serializer), drained the same way by 2 workers of RQ's own class (as
``--worker-class``): ``ratio_chain`` = flowjobs runs/s ÷ RQ chains/s (2 workers each).

Peer 2, Celery's ``chain`` (``--celery``, default ``solo``; goal ``ratio_celery`` >= 0.7): M
chains of ``STEPS_PER_RUN`` no-op tasks on the Redis broker with the Redis result backend (Celery's
defaults), 2 worker processes (``solo``: two ``--pool solo`` workers; ``prefork``: one worker with
2 pool processes), gated and timed the same way; ``ratio_celery`` = flowjobs runs/s (2 workers) ÷
Celery chains/s. Celery is not a dependency of flowjobs and this process never imports it:
``bench/celery_env.sh`` makes ``bench/.celery-venv`` on first use (from PyPI), and
``bench/celery_peer.py`` runs there as a subprocess that this one sends requests to, starting the
Celery workers itself. Its keys live in Redis database ``--celery-db`` (13) under the prefix
``fjbench<random>celery:``, and only those are deleted at the end.

Latency (2 idle workers each, one submission at a time, ``--latency-samples`` per round after a
warm-up): one 3-step run (``FlowClient.trigger``, polled every millisecond until its record is
terminal), one 3-job RQ chain (until its last job is finished), one 3-task Celery chain (until
its last result is ready): ``p50_flow_ms``, ``p50_chain_ms``, ``p50_celery_ms`` (each round's p50),
and ``latency_ratio_chain``/``latency_ratio_celery`` = flowjobs' p50 ÷ the peer's (goals <= 1.0 and
<= 1.5).

Everything it creates is removed at the end: keys under its prefix ``fjbench<random>:``, its
queues and registries, worker keys, and ``rq:job:``/``rq:results:``/``rq:executions:`` of every
job (flowjobs' from ``Keys(prefix).jobs()``, raw ones from the ids it made), and the Celery
peer's keys. It never flushes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from rq import Queue  # noqa: E402
from rq.serializers import JSONSerializer  # noqa: E402

from bench.space import bench_redis  # noqa: E402
from flowjobs.client import FlowClient  # noqa: E402
from flowjobs.core.keys import Keys  # noqa: E402
from flowjobs.core.manifest import FlowDefinition  # noqa: E402
from flowjobs.core.registry import FlowRegistry  # noqa: E402
from flowjobs.core.statuses import RunStatus  # noqa: E402
from flowjobs.processes import stop_processes  # noqa: E402
from flowjobs.store.retention import stored_job_ids  # noqa: E402

NOOP_FUNC = "bench.steps_vs_rq.noop"
STEPS_PER_RUN = 10
POLL_SECONDS = 0.01
DRAIN_TIMEOUT_SECONDS = 90.0
#: Tells a worker subprocess to run the duties beside its jobs (``--duties``).
DUTIES_ENV = "FLOWJOBS_BENCH_DUTIES"
READY_TIMEOUT_SECONDS = 30.0
LATENCY_STEPS = 3
LATENCY_POLL_SECONDS = 0.001
#: Redis database of the Celery peer's broker and result backend (its keys also carry the token).
CELERY_DB = 13


def noop() -> None:
    """The raw RQ job: does nothing."""


class BenchError(RuntimeError):
    """A drain failed, timed out, or a run did not succeed."""


# -- worker subprocess ---------------------------------------------------------------------------


def worker_main(argv: Sequence[str]) -> int:
    """``--_worker <simple|fork> <queue> <key_prefix> <worker_name> <redis_url> <fj|rq>``: a non-burst
    RQ worker; ``fj``: flowjobs' worker class (JSON serializer, engine installed), ``rq``: RQ's own
    ``SimpleWorker``/``Worker`` with the default serializer (the ``depends_on`` chain peer)."""
    kind, queue, prefix, name, url, flavour = argv
    from flowjobs.core.handlers import HandlerRegistry
    from flowjobs.factory import engine_from_settings
    from flowjobs.jobs import install_engine
    from flowjobs.logs import configure_logging
    from flowjobs.settings import Settings
    from flowjobs.worker import build_worker

    # Import the raw job's module now, as flowjobs' job module already is, so a forking worker's
    # work-horses do not import it again for every job.
    importlib.import_module(NOOP_FUNC.rpartition(".")[0])
    configure_logging("console", "warning")
    handlers = HandlerRegistry()
    handlers.register("Noop", lambda ctx, inputs: None)
    redis = Redis.from_url(url, client_name=name)  # every connection named, so the parent sees the BLMOVE
    if flavour == "rq":
        from rq import SimpleWorker, Worker

        plain = (SimpleWorker if kind == "simple" else Worker)([queue], connection=redis, name=name)
        plain.work(burst=False, with_scheduler=False, logging_level="WARNING")
        return 0
    settings = Settings(redis_url=url, queue=queue, key_prefix=prefix, handler_modules="")
    engine = engine_from_settings(settings, redis=redis, handlers=handlers)
    install_engine(engine)
    if os.environ.get(DUTIES_ENV) == "1":
        # As `flowjobs worker` does: the duties on a thread beside the jobs (their cost is measured).
        from flowjobs.duties import flow_duties

        flow_duties(engine, settings, owner=name).start()
    worker = build_worker(redis, queue, simple=kind == "simple", name=name)
    worker.work(burst=False, with_scheduler=False, logging_level="WARNING")
    return 0


# -- parent --------------------------------------------------------------------------------------


@dataclass
class Drain:
    """Outcome of one timed drain."""

    jobs: int
    seconds: float
    commands: int | None = None
    background_per_s: float | None = None


@dataclass
class Bench:
    """The benchmark's corner of Redis: token, processes, job ids, and cleanup."""

    redis: Redis
    url: str
    worker_kind: str
    duties: bool = False
    token: str = field(default_factory=lambda: f"fjbench{uuid.uuid4().hex[:10]}")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    raw_job_ids: list[str] = field(default_factory=list)
    own_commands: int = 0

    @property
    def prefix(self) -> str:
        return f"{self.token}:"

    def queue(self, phase: str, *, json: bool = True) -> Queue:
        """The phase's queue, new each time (a registry must hold this round's jobs only): JSON
        serializer (raw jobs, flowjobs), or RQ's default one (chains)."""
        name = f"{self.token}-{phase}-{len(self.queues)}"
        self.queues.append(name)
        return Queue(name, connection=self.redis, serializer=JSONSerializer if json else None)

    # workers

    def start_workers(self, queue: Queue, count: int, *, plain: bool = False) -> list[str]:
        """``count`` worker subprocesses on ``queue`` (RQ's own class with ``plain``), once ready."""
        names = [f"{queue.name}-w{i}" for i in range(count)]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path, DUTIES_ENV: "1" if self.duties else "0"}
        for name in names:
            self.processes.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--_worker", self.worker_kind, queue.name,
                 self.prefix, name, self.url, "rq" if plain else "fj"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
            ))
        self._wait_ready(names)
        return names

    def _wait_ready(self, names: list[str]) -> None:
        """Until every worker is idle and has a connection blocked in BLMOVE (CLIENT LIST)."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not all(self.redis.hget(f"rq:worker:{n}", "state") == b"idle" for n in names):
            self._check_processes()
            if time.monotonic() > deadline:
                raise BenchError(f"workers {names} did not become idle within {READY_TIMEOUT_SECONDS:g}s")
            time.sleep(0.05)
        wanted = set(names)
        while True:
            clients = self.redis.client_list()
            blocked = {c.get("name") for c in clients
                       if c.get("cmd") in ("blmove", "blpop") and "b" in c.get("flags", "")}
            if wanted <= blocked:
                return
            self._check_processes()
            if time.monotonic() > deadline:
                raise BenchError(f"workers {names} did not block in BLMOVE within {READY_TIMEOUT_SECONDS:g}s")
            time.sleep(0.02)

    def _check_processes(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise BenchError(f"worker process {proc.pid} exited with code {proc.returncode}")

    def stop_workers(self) -> None:
        stop_processes(self.processes)
        self.processes.clear()

    # queue gate and timing

    def take_queue(self, queue: Queue) -> list[bytes]:
        """Remove and return every job id of the queue list (one transaction)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(queue.key, 0, -1)
            pipe.delete(queue.key)
            ids, _ = pipe.execute()
        return list(ids)

    def command_calls(self) -> int:
        stats: dict[str, Any] = self.redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))

    def drain(
        self, queue: Queue, ids: list[bytes], expected: int, workers: int, count_commands: bool,
        *, plain: bool = False,
    ) -> Drain:
        """Start workers, release ``ids`` onto the queue, time until ``expected`` jobs finished."""
        self.start_workers(queue, workers, plain=plain)
        background: float | None = None
        before = 0
        if count_commands:
            first = self.command_calls()
            time.sleep(0.5)
            background = max(0, self.command_calls() - first - 1) / 0.5
            before = self.command_calls()
        self.own_commands = 1  # the INFO above is counted only in the next snapshot
        finished_key = f"rq:finished:{queue.name}"
        failed_key = f"rq:failed:{queue.name}"
        start = time.perf_counter()
        self.redis.rpush(queue.key, *ids)
        self.own_commands += 1
        deadline = start + DRAIN_TIMEOUT_SECONDS
        while True:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(finished_key)
                pipe.zcard(failed_key)
                finished, failed = pipe.execute()
            self.own_commands += 2
            now = time.perf_counter()
            if finished >= expected or failed:
                break
            if now > deadline:
                raise BenchError(f"queue {queue.name}: {finished}/{expected} jobs finished after "
                                 f"{DRAIN_TIMEOUT_SECONDS:g}s")
            self._check_processes()
            time.sleep(POLL_SECONDS)
        commands = self.command_calls() - before - self.own_commands if count_commands else None
        self.stop_workers()
        if failed:
            raise BenchError(f"queue {queue.name}: {failed} job(s) failed\n{self.failed_report(failed_key)}")
        return Drain(jobs=expected, seconds=now - start, commands=commands, background_per_s=background)

    def failed_report(self, failed_key: str) -> str:
        lines = []
        for raw_id in self.redis.zrange(failed_key, 0, 2):
            job_id = _text(raw_id)
            description = _text(self.redis.hget(f"rq:job:{job_id}", "description"))
            lines.append(f"job {job_id} ({description}):")
            results: Any = self.redis.xrevrange(f"rq:results:{job_id}", count=1)
            exc: Any = results[0][1].get(b"exc_string") if results else None
            exc = exc or self.redis.hget(f"rq:job:{job_id}", "exc_info")
            with contextlib.suppress(TypeError, ValueError, zlib.error):  # RQ stores them compressed, base64
                exc = zlib.decompress(base64.b64decode(exc))
            lines.append(_text(exc) or "(no traceback stored)")
        return "\n".join(lines)

    # the two workloads

    def rq_drain(self, jobs: int, workers: int, count_commands: bool) -> Drain:
        queue = self.queue(f"rq{workers}w")
        ids = [f"{queue.name}-{i}" for i in range(jobs)]
        self.raw_job_ids.extend(ids)
        queue.enqueue_many([Queue.prepare_data(NOOP_FUNC, job_id=job_id) for job_id in ids])
        return self.drain(queue, self.take_queue(queue), jobs, workers, count_commands)

    def flow_client(self, queue: Queue, steps: int) -> tuple[FlowClient, FlowDefinition]:
        """A client on ``queue`` with a linear ``steps``-step ``Noop`` flow."""
        definition = linear_flow(f"{queue.name}-linear", steps)
        client = FlowClient(self.redis, FlowRegistry([definition]), queue.name, key_prefix=self.prefix)
        return client, definition

    def flow_drain(self, runs: int, workers: int, count_commands: bool) -> tuple[Drain, list[str]]:
        queue = self.queue(f"fj{workers}w")
        client, definition = self.flow_client(queue, STEPS_PER_RUN)
        run_ids = [str(client.trigger(definition.name).run_id) for _ in range(runs)]
        expected = runs * (1 + STEPS_PER_RUN)
        drained = self.drain(queue, self.take_queue(queue), expected, workers, count_commands)
        statuses = [client.get_run(run_id) for run_id in run_ids]
        bad = [(rid, s.status.value if s else "missing") for rid, s in zip(run_ids, statuses, strict=True)
               if s is None or s.status is not RunStatus.Succeeded]
        if bad:
            raise BenchError(f"{len(bad)}/{runs} runs did not end Succeeded, e.g. {bad[:3]}")
        return drained, run_ids

    def chain_jobs(self, queue: Queue, name: str, steps: int) -> list[str]:
        """Enqueue one RQ ``depends_on`` chain of ``steps`` no-op jobs (one ``enqueue_many``: the
        first job queued, the others deferred); returns its job ids in order."""
        ids = [f"{name}-{i}" for i in range(steps)]
        self.raw_job_ids.extend(ids)
        queue.enqueue_many([
            Queue.prepare_data(NOOP_FUNC, job_id=job_id, depends_on=ids[i - 1] if i else None)
            for i, job_id in enumerate(ids)
        ])
        return ids

    def chain_drain(self, chains: int, workers: int) -> Drain:
        """RQ's own peer of ``flow_drain``: ``chains`` linear ``depends_on`` chains of
        ``STEPS_PER_RUN`` no-op jobs, drained by RQ's own worker class (default serializer)."""
        queue = self.queue(f"chain{workers}w", json=False)
        for c in range(chains):
            self.chain_jobs(queue, f"{queue.name}-{c}", STEPS_PER_RUN)
        return self.drain(queue, self.take_queue(queue), chains * STEPS_PER_RUN, workers, False, plain=True)

    def wait_status(self, key: str, field_name: str, done: Callable[[Any], bool]) -> None:
        """Poll one hash field every millisecond until ``done`` accepts it."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while not done(self.redis.hget(key, field_name)):
            if time.monotonic() > deadline:
                raise BenchError(f"{key} not done within {DRAIN_TIMEOUT_SECONDS:g}s")
            time.sleep(LATENCY_POLL_SECONDS)

    def flow_latency(self, samples: int, workers: int) -> list[float]:
        """Submit → done seconds of ``samples`` linear 3-step runs, one at a time (after a warm-up)."""
        queue = self.queue(f"fjlat{workers}w")
        client, definition = self.flow_client(queue, LATENCY_STEPS)
        keys = Keys(self.prefix)
        self.start_workers(queue, workers)
        terminal = {s.value.encode() for s in RunStatus if s.is_terminal}
        seconds = []
        for _ in range(samples + 1):
            start = time.perf_counter()
            run_id = client.trigger(definition.name).run_id
            self.wait_status(keys.run(run_id), "status", lambda status: status in terminal)
            seconds.append(time.perf_counter() - start)
            if client.get_run(run_id) is None or self.redis.hget(keys.run(run_id), "status") != b"Succeeded":
                raise BenchError(f"latency run {run_id} did not succeed")
        self.stop_workers()
        return seconds[1:]

    def chain_latency(self, samples: int, workers: int) -> list[float]:
        """Submit → done seconds of ``samples`` 3-job ``depends_on`` chains (RQ's own workers)."""
        queue = self.queue(f"chainlat{workers}w", json=False)
        self.start_workers(queue, workers, plain=True)
        seconds = []
        for n in range(samples + 1):
            start = time.perf_counter()
            last = self.chain_jobs(queue, f"{queue.name}-{n}", LATENCY_STEPS)[-1]
            # Only "finished" ends a chain: RQ can show a status for a moment before the job's
            # final one (seen here: "failed" read back as "started"), so a failure is judged from
            # RQ's failed registry.
            self.wait_status(
                f"rq:job:{last}",
                "status",
                lambda status: status == b"finished" or bool(self.redis.zcard(f"rq:failed:{queue.name}")),
            )
            seconds.append(time.perf_counter() - start)
            if self.redis.zcard(f"rq:failed:{queue.name}"):
                report = self.failed_report(f"rq:failed:{queue.name}")
                raise BenchError(f"latency chain {queue.name}-{n} failed\n{report}")
        self.stop_workers()
        return seconds[1:]

    # cleanup

    def cleanup(self) -> None:
        self.stop_workers()
        job_ids = [*stored_job_ids(self.redis, Keys(self.prefix)), *self.raw_job_ids]
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start:start + 500]
            self.redis.delete(*[f"rq:{kind}:{j}" for j in chunk for kind in ("job", "results", "executions")])
        for key in self.redis.scan_iter(match=f"*{self.token}*", count=1000):
            self.redis.delete(key)
        if self.queues:
            self.redis.srem("rq:queues", *[f"rq:queue:{q}" for q in self.queues])
        workers = [m for m in self.redis.smembers("rq:workers") if self.token.encode() in m]
        if workers:
            self.redis.srem("rq:workers", *workers)


class CeleryPeer:
    """Celery's side, driven through ``bench/celery_peer.py`` in Celery's own virtualenv (made on
    demand by ``bench/celery_env.sh``): this process never imports ``celery``."""

    def __init__(self, url: str, pool: str, db: int, token: str) -> None:
        try:
            setup = subprocess.run(["bash", str(HERE / "celery_env.sh")], capture_output=True, text=True,
                                   check=False)
        except OSError as error:
            raise BenchError(f"cannot run bench/celery_env.sh: {error}") from error
        if setup.returncode != 0:
            raise BenchError(f"cannot set up Celery's virtualenv (bench/celery_env.sh exited "
                             f"{setup.returncode}; --celery off skips the Celery peer):\n"
                             f"{setup.stderr[-2000:]}")
        env = {**os.environ, "CELERY_BENCH_URL": urlunsplit(urlsplit(url)._replace(path=f"/{db}")),
               "CELERY_BENCH_PREFIX": f"{token}celery:", "CELERY_BENCH_QUEUE": f"{token}-celery",
               "CELERY_BENCH_POOL": pool}
        self.process = subprocess.Popen(
            [setup.stdout.strip(), str(HERE / "celery_peer.py")], cwd=HERE, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        )

    def request(self, **request: object) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise BenchError(f"the Celery helper exited with code {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"celery: {answer['error']}")
        return answer["seconds"]

    def drain(self, chains: int) -> Drain:
        """``chains`` Celery chains of ``STEPS_PER_RUN`` no-op tasks, drained by 2 worker processes."""
        return Drain(jobs=chains * STEPS_PER_RUN, seconds=self.request(op="drain", chains=chains,
                                                                       steps=STEPS_PER_RUN))

    def latency(self, samples: int) -> list[float]:
        """Submit → done seconds of ``samples`` ``LATENCY_STEPS``-task chains, one at a time."""
        seconds: list[float] = self.request(op="latency", samples=samples, steps=LATENCY_STEPS)
        return seconds

    def close(self) -> None:
        """Ask the helper to stop its workers and delete its keys, and wait for it."""
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "quit"}\n')
            self.process.stdin.close()
        # Its own cleanup first: a SIGTERM now would cut it short (the helper exits on SIGTERM).
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30.0)
        stop_processes([self.process])


def linear_flow(name: str, steps: int) -> FlowDefinition:
    """A flow of ``steps`` ``Noop`` steps, each after the previous one."""
    spec: dict[str, dict[str, Any]] = {"s1": {"type": "Noop"}}
    for i in range(2, steps + 1):
        spec[f"s{i}"] = {"type": "Noop", "run_after": [f"s{i - 1}"]}
    return FlowDefinition.model_validate({"id": str(uuid.uuid4()), "name": name, "steps": spec})


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=60, help="flowjobs runs per drain (10 steps each)")
    parser.add_argument("--jobs", type=int, default=600, help="raw RQ no-op jobs per drain")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds of every phase; figures are their median (min, max shown)")
    parser.add_argument("--floor", type=float, default=0.5,
                        help="minimum median ratio (2 workers); exit 1 below")
    parser.add_argument("--duties", action="store_true",
                        help="flowjobs workers also run the duties, as `flowjobs worker` does")
    parser.add_argument("--latency-samples", type=int, default=30,
                        help="3-step submit -> done samples per round, for each system")
    parser.add_argument("--worker-class", choices=("simple", "fork"), default="simple",
                        help="RQ SimpleWorker (default) or the forking Worker")
    parser.add_argument("--celery", choices=("solo", "prefork", "off"), default="solo",
                        help="Celery peer's pool: 2 solo worker processes (default), one prefork worker "
                             "with 2 processes, or no Celery peer")
    parser.add_argument("--celery-db", type=int, default=CELERY_DB,
                        help="Redis database number of Celery's broker and result backend")
    args = parser.parse_args(argv)
    if min(args.runs, args.jobs, args.rounds, args.latency_samples) < 1:
        parser.error("--runs, --jobs, --rounds and --latency-samples must be at least 1")
    return args


def per_s(drain: Drain, count: int) -> float:
    return count / drain.seconds


def noise_note(name: str, drain: Drain) -> Iterable[str]:
    if drain.background_per_s and drain.commands:
        share = drain.background_per_s * drain.seconds / drain.commands
        if share >= 0.01:
            yield (f"note: other clients sent ~{drain.background_per_s:.0f} commands/s before the {name} "
                   f"drain; if that continued it is ~{share:.0%} of the commands counted")


def run_round(
    bench: Bench, celery: CeleryPeer | None, args: argparse.Namespace, index: int,
) -> dict[str, float]:
    """Every phase once (in reverse order on odd rounds, so none always runs first); its figures."""
    drain_phases: dict[str, Callable[[], Drain]] = {
        "rq1": lambda: bench.rq_drain(args.jobs, 1, count_commands=True),
        "fj1": lambda: bench.flow_drain(args.runs, 1, count_commands=True)[0],
        "rq2": lambda: bench.rq_drain(args.jobs, 2, count_commands=False),
        "fj2": lambda: bench.flow_drain(args.runs, 2, count_commands=False)[0],
        "chain2": lambda: bench.chain_drain(args.runs, 2),
    }
    latency_phases: dict[str, Callable[[int], list[float]]] = {
        "flow": lambda samples: bench.flow_latency(samples, 2),
        "chain": lambda samples: bench.chain_latency(samples, 2),
    }
    if celery is not None:
        drain_phases["celery2"] = lambda: celery.drain(args.runs)
        latency_phases["celery"] = celery.latency
    order = [*drain_phases, *latency_phases]
    drains: dict[str, Drain] = {}
    p50: dict[str, float] = {}
    for name in order[::-1] if index % 2 else order:
        if name in drain_phases:
            drains[name] = drain_phases[name]()
        else:
            p50[name] = statistics.median(latency_phases[name](args.latency_samples))
    steps = args.runs * STEPS_PER_RUN
    rq1, fj1, rq2, fj2, chain2 = (drains[k] for k in ("rq1", "fj1", "rq2", "fj2", "chain2"))
    assert rq1.commands is not None and fj1.commands is not None
    figures = {
        "rq_jobs_per_s_1w": per_s(rq1, args.jobs), "rq_jobs_per_s_2w": per_s(rq2, args.jobs),
        "flowjobs_steps_per_s_1w": per_s(fj1, steps), "flowjobs_steps_per_s_2w": per_s(fj2, steps),
        "redis_commands_per_rq_job": rq1.commands / args.jobs,
        "redis_commands_per_step": fj1.commands / steps,
        "ratio_1w": per_s(fj1, steps) / per_s(rq1, args.jobs),
        "ratio": per_s(fj2, steps) / per_s(rq2, args.jobs),
        "rq_chains_per_s_2w": per_s(chain2, args.runs), "flowjobs_runs_per_s_2w": per_s(fj2, args.runs),
        "ratio_chain": per_s(fj2, args.runs) / per_s(chain2, args.runs),
        "p50_flow_ms": p50["flow"] * 1000, "p50_chain_ms": p50["chain"] * 1000,
        "latency_ratio_chain": p50["flow"] / p50["chain"],
    }
    if celery is not None:
        figures |= {
            "celery_chains_per_s_2w": per_s(drains["celery2"], args.runs),
            "ratio_celery": per_s(fj2, args.runs) / per_s(drains["celery2"], args.runs),
            "p50_celery_ms": p50["celery"] * 1000, "latency_ratio_celery": p50["flow"] / p50["celery"],
        }
    for line in [*noise_note("RQ 1-worker", rq1), *noise_note("flowjobs 1-worker", fj1)]:
        print(line)
    return figures


#: Figures printed with their spread over the rounds (``<name>_rounds min= median= max=``).
SPREAD = ("ratio", "ratio_1w", "ratio_chain", "p50_flow_ms", "p50_chain_ms", "latency_ratio_chain",
          "ratio_celery", "p50_celery_ms", "latency_ratio_celery")
NOTES = {
    "redis_commands_per_step": f"its RQ job included, plus 1/{STEPS_PER_RUN} of a trigger job",
    "ratio_chain": "goal >= 1.0",
    "latency_ratio_chain": "3-step p50 flowjobs / RQ chain; goal <= 1.0",
    "ratio_celery": "goal >= 0.7",
    "latency_ratio_celery": "3-step p50 flowjobs / Celery chain; goal <= 1.5",
}


def report(args: argparse.Namespace, rounds: list[dict[str, float]]) -> dict[str, float]:
    """Print each round, then every figure's median (and min/median/max for ``SPREAD``)."""
    print(f"worker_class={args.worker_class} jobs={args.jobs} runs={args.runs} steps_per_run={STEPS_PER_RUN} "
          f"rounds={args.rounds} latency_samples={args.latency_samples} "
          f"celery={args.celery}{'' if args.celery == 'off' else ' (2 worker processes)'}")
    for index, figures in enumerate(rounds, 1):
        shown = " ".join(f"{name}={_figure(name, figures[name])}" for name in SPREAD if name in figures)
        print(f"round {index}: {shown}")
    medians: dict[str, float] = {}
    for name in rounds[0]:
        values = [figures[name] for figures in rounds]
        medians[name] = statistics.median(values)
        if name in SPREAD:
            print(f"{name}_rounds min={_figure(name, min(values))} median={_figure(name, medians[name])} "
                  f"max={_figure(name, max(values))}")
        note = f"  ({NOTES[name]})" if name in NOTES else ""
        print(f"{name}={_figure(name, medians[name])}{note}")
    return medians


def _figure(name: str, value: float) -> str:
    return f"{value:.3f}" if "ratio" in name else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url, server = bench_redis()
    load_before = os.getloadavg()[0]
    bench = Bench(Redis.from_url(url), url, args.worker_class, duties=args.duties)
    celery: CeleryPeer | None = None
    rounds: list[dict[str, float]] = []
    try:
        if args.celery != "off":
            celery = CeleryPeer(url, args.celery, args.celery_db, bench.token)
        for index in range(args.rounds):
            rounds.append(run_round(bench, celery, args, index))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if celery is not None:
            celery.close()
        bench.cleanup()
        if server is not None:
            server.stop()
    medians = report(args, rounds)
    if load_before > 0.5:
        print(f"note: 1-min load average was {load_before:.2f} at start: other processes on this "
              f"{os.cpu_count()}-core machine may have competed for CPU (figures vary from run to run)")
    if medians["ratio"] < args.floor:
        print(f"below floor: median ratio {medians['ratio']:.3f} < {args.floor:g}")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_worker":
        sys.exit(worker_main(sys.argv[2:]))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
