"""Celery's side of ``steps_vs_rq.py``: runs ONLY in Celery's own virtualenv (``bench/celery_env.sh``).

flowjobs' venv never imports this module's ``celery``: ``steps_vs_rq.py`` starts
``<celery venv>/bin/python bench/celery_peer.py`` as a subprocess and talks to it in JSON lines
(one request on stdin, one answer on stdout):

* ``{"op": "drain", "chains": M, "steps": S}``: M ``chain``s of S no-op tasks are submitted with
  no worker running, their first messages taken off the broker list (``LRANGE`` + ``DEL`` in one
  transaction), the workers started and waited for (every one answers ``ping``), then the clock
  starts just before one ``RPUSH`` puts the messages back and stops when the last task of every
  chain has a result (polled every 10 ms, in submission order). Answer: ``{"seconds": s}``.
* ``{"op": "latency", "samples": K, "steps": S}``: with the workers idle, one S-task chain at a
  time is submitted (``apply_async``) and its last result polled every millisecond; K samples
  after a warm-up. Answer: ``{"seconds": [...]}``.
* ``{"op": "quit"}``: removes every key it made and exits.

Celery's defaults otherwise: Redis broker and Redis result backend at ``CELERY_BENCH_URL``, JSON,
a task acked just before it runs, the worker's own defaults (mingle, gossip, heartbeat). Workers
(``CELERY_BENCH_POOL``): ``solo``, 2 worker processes of ``--pool solo``; ``prefork``, one worker
with ``--pool prefork --concurrency 2``. Everything lives under ``CELERY_BENCH_PREFIX`` (kombu's
and the result backend's ``global_keyprefix``; the queue name carries it too), and only keys under
it are deleted at the end: nothing is flushed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from celery import Celery, chain  # type: ignore[import-not-found,unused-ignore]
from redis import Redis

URL = os.environ.get("CELERY_BENCH_URL", "redis://127.0.0.1:6379/13")
PREFIX = os.environ.get("CELERY_BENCH_PREFIX", "fjcelery:")
QUEUE = os.environ.get("CELERY_BENCH_QUEUE", f"{PREFIX.rstrip(':')}-q")
POOL = os.environ.get("CELERY_BENCH_POOL", "solo")
WORKERS = 2
TIMEOUT_SECONDS = 90.0
HERE = Path(__file__).resolve().parent

app = Celery("celery_peer", broker=URL, backend=URL)
app.conf.update(
    broker_transport_options={"global_keyprefix": PREFIX},
    result_backend_transport_options={"global_keyprefix": PREFIX},
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator,unused-ignore]
def noop() -> None:
    """The no-op task."""


class PeerError(RuntimeError):
    """A worker died, a chain failed or timed out."""


class Peer:
    def __init__(self) -> None:
        self.redis = Redis.from_url(URL)
        self.processes: list[subprocess.Popen[bytes]] = []

    def worker_names(self) -> list[str]:
        return [f"{QUEUE}-w{i}@bench" for i in range(WORKERS if POOL == "solo" else 1)]

    def start_workers(self) -> None:
        pool = ["--pool", "solo"] if POOL == "solo" else ["--pool", "prefork", "--concurrency", str(WORKERS)]
        for name in self.worker_names():
            self.processes.append(subprocess.Popen(
                [sys.executable, "-W", "ignore:You're running the worker with superuser", "-m", "celery",
                 "-A", "celery_peer", "worker", *pool, "-n", name, "-Q", QUEUE, "--loglevel", "WARNING"],
                cwd=HERE, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
            ))
        names = set(self.worker_names())
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while True:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise PeerError(f"celery worker {proc.pid} exited with code {proc.returncode}")
            replies = app.control.ping(destination=sorted(names), timeout=0.3)
            if names <= {name for reply in replies for name in reply}:
                return
            if time.monotonic() > deadline:
                raise PeerError(f"celery workers {sorted(names)} did not answer ping within "
                                f"{TIMEOUT_SECONDS:g}s")

    def stop_workers(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()  # the worker's warm shutdown (it stops its own pool processes)
        for proc in self.processes:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def submit(self, steps: int) -> Any:
        return chain(*(noop.si() for _ in range(steps))).apply_async()

    def wait(self, result: Any, poll: float, deadline: float) -> None:
        while not result.ready():
            if time.perf_counter() > deadline:
                raise PeerError(f"chain ending in {result.id} not done within {TIMEOUT_SECONDS:g}s")
            time.sleep(poll)
        if result.state != "SUCCESS":
            raise PeerError(f"chain ending in {result.id} ended {result.state}")

    def drain(self, chains: int, steps: int) -> dict[str, Any]:
        results = [self.submit(steps) for _ in range(chains)]
        queue_key = f"{PREFIX}{QUEUE}"
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrange(queue_key, 0, -1)
            pipe.delete(queue_key)
            messages, _ = pipe.execute()
        if len(messages) != chains:
            raise PeerError(f"expected {chains} messages on {queue_key}, found {len(messages)}")
        self.start_workers()
        try:
            start = time.perf_counter()
            self.redis.rpush(queue_key, *messages)
            for result in results:
                self.wait(result, 0.01, start + TIMEOUT_SECONDS)
            seconds = time.perf_counter() - start
        finally:
            self.stop_workers()
        return {"seconds": seconds}

    def latency(self, samples: int, steps: int) -> dict[str, Any]:
        self.start_workers()
        seconds = []
        try:
            for _ in range(samples + 1):
                start = time.perf_counter()
                self.wait(self.submit(steps), 0.001, start + TIMEOUT_SECONDS)
                seconds.append(time.perf_counter() - start)
        finally:
            self.stop_workers()
        return {"seconds": seconds[1:]}

    def cleanup(self) -> None:
        self.stop_workers()
        batch = list(self.redis.scan_iter(match=f"{PREFIX}*", count=1000))
        for start in range(0, len(batch), 1000):
            self.redis.unlink(*batch[start:start + 1000])


def serve() -> int:
    peer = Peer()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    try:
        for line in sys.stdin:
            request = json.loads(line)
            try:
                if request["op"] == "quit":
                    break
                handler = peer.drain if request["op"] == "drain" else peer.latency
                answer = handler(request["chains"] if request["op"] == "drain" else request["samples"],
                                 request["steps"])
            except PeerError as error:
                answer = {"error": str(error)}
            print(json.dumps(answer), flush=True)
    finally:
        peer.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
