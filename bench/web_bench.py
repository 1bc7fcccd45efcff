"""Benchmark: the HTTP API over real HTTP with a large run history — p50/p99 of the run list and of
a run's detail.

Run as ``python bench/web_bench.py [--max-runs N] [--samples N] [--floor-ms MS] [--webhook-floor R]``;
prints one ``name=value`` line per figure, then a summary, and exits 1 when a floor fails (naming it).

What it measures, on its own key prefix ``fjscale<random>:`` and queue (``bench.store_scale``'s
``Bench``, whose seeding it reuses):

* One real run of a linear 5-step ``Noop`` flow is triggered and drained in-process; the rest of
  the history is written directly (records only: 10 flows, 90 % Succeeded), up to 10,000 and
  ``--max-runs`` (100,000) runs.
* ``flowjobs web`` runs as a subprocess (uvicorn, its own process: the client's timing loop does
  not share its interpreter) on a free port, for the same Redis, prefix and queue.
* At each size, ``--samples`` timed ``GET /flows/api/runs`` (the first page, 50 runs, with its
  ``X-Total-Count``) and ``GET /flows/api/runs/{id}`` (the real run: 5 steps and their attempts)
  over one keep-alive HTTP connection, after a warm-up; p50 and p99 in milliseconds.

Then (``PHASES``, each given the running ``WebBench``) webhook → run created throughput against
``FlowClient.trigger`` called directly (``webhook_phase``), printed as ``webhook_ratio``.

Floors: list and detail p50 ≤ ``--floor-ms`` (20 ms) at the largest size; ``webhook_ratio`` ≥
``--webhook-floor`` (0.5).

Cleanup: every key under its prefix and RQ's keys of its jobs (``Bench.cleanup``); the web process
is stopped. It never flushes.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout: make ``flowjobs`` and ``bench`` importable
    sys.path.insert(0, str(ROOT))

from bench.space import bench_redis  # noqa: E402
from bench.store_scale import Bench, linear  # noqa: E402
from flowjobs.logs import configure_logging  # noqa: E402
from flowjobs.processes import stop_processes  # noqa: E402

SIZES = (10_000, 100_000)
FLOOR_MS = 20.0
#: The floor: webhook deliveries stored per second against direct ``FlowClient.trigger`` calls.
WEBHOOK_FLOOR = 0.5
WEBHOOK_SAMPLES = 600
WEBHOOK_SENDERS = 4
WEBHOOK_ROUNDS = 5
API = "/flows/api"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentiles_ms(call: Callable[[], object], samples: int) -> tuple[float, float]:
    """p50 and p99 wall time of ``call`` in milliseconds (after five warm-up calls)."""
    for _ in range(5):
        call()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return statistics.median(times), cuts[98]


@dataclass
class WebBench:
    """The seeded history, the web process serving it, and an HTTP client for it."""

    bench: Bench
    url: str
    run_id: str = ""
    process: subprocess.Popen[bytes] | None = None
    base: str = ""
    address: tuple[str, int] = ("127.0.0.1", 0)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def start_web(self) -> None:
        """``flowjobs web`` on a free port for the bench's Redis, prefix and queue; wait for health."""
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": self.url,
            "FLOWJOBS_KEY_PREFIX": self.bench.prefix,
            "FLOWJOBS_QUEUE": self.bench.queue,
            "FLOWJOBS_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowjobs", "web", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.address = ("127.0.0.1", port)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get(f"{self.base}{API}/health").status_code in (200, 503):
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flowjobs web did not start")
            time.sleep(0.1)

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(f"{self.base}{API}{path}")
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
        return response

    def history(self, max_runs: int, samples: int) -> dict[int, dict[str, tuple[float, float]]]:
        """List and detail p50/p99 at each history size."""
        run_id = self.bench.run_to_end(linear(f"{self.bench.token}-linear5", 5))
        target = self.bench.client.get_run(run_id)
        assert target is not None
        self.run_id = str(run_id)
        self.start_web()
        stored, out = 1, {}
        for size in sorted({min(size, max_runs) for size in SIZES}):
            start = time.perf_counter()
            self.bench.seed(size - stored, target, first=False)
            self.bench.report(f"seed_seconds_{size}", time.perf_counter() - start, ".1f")
            stored = size
            total = self.get("/runs").headers["X-Total-Count"]
            if int(total) != size:
                raise RuntimeError(f"the API counts {total} runs, {size} were stored")
            figures = {
                "list": percentiles_ms(lambda: self.get("/runs"), samples),
                "detail": percentiles_ms(lambda: self.get(f"/runs/{self.run_id}"), samples),
            }
            for name, (p50, p99) in figures.items():
                self.bench.report(f"web_{size}_{name}_p50_ms", p50)
                self.bench.report(f"web_{size}_{name}_p99_ms", p99)
            out[size] = figures
        return out

    def stop(self) -> None:
        self.http.close()
        if self.process is not None:
            stop_processes([self.process])


#: The webhook phase's flow: a GitHub-signed Webhook trigger and a Manual one, one ``Noop`` step.
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"
WEBHOOK_FLOW = {
    "id": "0d7c6a52-5b3e-4f7c-9a1e-b3c1e2f4a5d6",
    "name": "webhook-bench",
    "triggers": {
        "manual": {"type": "Manual"},
        "hook": {
            "type": "Webhook",
            "inputs": {"webhookSlug": "bench", "webhookScheme": "github", "webhookSecret": WEBHOOK_SECRET},
        },
    },
    "steps": {"a": {"type": "Noop"}},
}


def webhook_phase(web: WebBench) -> None:
    """Webhook → run created against ``FlowClient.trigger`` called directly, in runs stored per
    second: ``direct_per_second`` is ``WEBHOOK_SAMPLES`` triggers of the bench flow in this process,
    one after another (an application calling the library); ``webhook_per_second`` is as many
    GitHub-signed deliveries from ``WEBHOOK_SENDERS`` concurrent senders, each on its own keep-alive
    connection (stdlib ``http.client``: the senders' own CPU stays small on a shared machine);
    ``webhook_ratio`` is the second over the first, the median of ``WEBHOOK_ROUNDS`` interleaved
    rounds (min and max printed beside it). Every delivery is a fresh body, so each pays the
    HMAC and the replay memory (in the script that writes the run, as a direct trigger writes its
    own); the rate limit is off (it would measure itself). Also p50/p99 of one delivery at a time
    over httpx. A second ``flowjobs web`` serves a flows folder holding the bench flow; no worker
    runs the runs (ingress only)."""
    from flowjobs.core.manifest import FlowDefinition
    from flowjobs.core.webhooks.schemes import Scheme, sign

    with tempfile.TemporaryDirectory() as flows_dir:
        (Path(flows_dir) / "webhook-bench.json").write_text(json.dumps(WEBHOOK_FLOW))
        saved = dict(os.environ)
        os.environ.update({"FLOWJOBS_FLOWS_DIR": flows_dir, "FLOWJOBS_WEBHOOK_RATE_PER_SECOND": "0"})
        hooks = WebBench(web.bench, web.url)
        try:
            hooks.start_web()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        web.bench.flows.add(FlowDefinition.model_validate(WEBHOOK_FLOW))
        counter = itertools.count()
        path = f"{API}/webhook/bench"

        def signed() -> tuple[bytes, dict[str, str]]:
            body = json.dumps({"orderId": next(counter)}).encode()
            signature = sign(Scheme.github, WEBHOOK_SECRET.encode(), body)
            return body, {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}

        def deliver() -> None:
            body, headers = signed()
            reply = hooks.http.post(f"{hooks.base}{path}", content=body, headers=headers)
            if reply.status_code != 202:
                raise RuntimeError(f"webhook: {reply.status_code} {reply.text[:200]}")

        def sender(count: int) -> None:
            connection = http.client.HTTPConnection(*hooks.address)
            try:
                for _ in range(count):
                    body, headers = signed()
                    connection.request("POST", path, body=body, headers=headers)
                    reply = connection.getresponse()
                    text = reply.read()
                    if reply.status != 202:
                        raise RuntimeError(f"webhook: {reply.status} {text[:200]!r}")
            finally:
                connection.close()

        def direct() -> None:
            for _ in range(WEBHOOK_SAMPLES):
                web.bench.client.trigger(WEBHOOK_FLOW["name"], data={"orderId": next(counter)})

        def concurrent() -> None:
            with ThreadPoolExecutor(WEBHOOK_SENDERS) as pool:
                share = WEBHOOK_SAMPLES // WEBHOOK_SENDERS
                for done in [pool.submit(sender, share) for _ in range(WEBHOOK_SENDERS)]:
                    done.result()

        try:
            p50, p99 = percentiles_ms(deliver, 200)
            web.bench.report("webhook_p50_ms", p50)
            web.bench.report("webhook_p99_ms", p99)
            direct()  # warm-up: connections, caches, the thread pool
            concurrent()
            rates: dict[str, list[float]] = {"direct": [], "webhook": []}
            ratios = []
            for _ in range(WEBHOOK_ROUNDS):  # interleaved, so a busy moment of the machine hits both
                for name, batch in (("direct", direct), ("webhook", concurrent)):
                    start = time.perf_counter()
                    batch()
                    rates[name].append(WEBHOOK_SAMPLES / (time.perf_counter() - start))
                ratios.append(rates["webhook"][-1] / rates["direct"][-1])
            for name, values in rates.items():
                web.bench.report(f"{name}_per_second", statistics.median(values), ".0f")
            median = statistics.median(ratios)
            print(f"webhook_ratio_rounds min={min(ratios):.3f} median={median:.3f} max={max(ratios):.3f}")
            web.bench.report("webhook_ratio", median)
        finally:
            hooks.stop()


#: Phases after the history one, each given the running ``WebBench`` (same server and history).
PHASES: tuple[Callable[[WebBench], None], ...] = (webhook_phase,)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-runs", type=int, default=SIZES[-1],
                        help="largest history size (stored runs); CI uses a smaller one")
    parser.add_argument("--samples", type=int, default=200, help="timed requests per figure")
    parser.add_argument("--floor-ms", type=float, default=FLOOR_MS,
                        help="p50 floor of list and detail at the largest size")
    parser.add_argument("--webhook-floor", type=float, default=WEBHOOK_FLOOR,
                        help="floor of webhook deliveries per second over direct triggers per second")
    args = parser.parse_args(argv)
    if args.max_runs < 10 or args.samples < 10:
        parser.error("--max-runs and --samples must be at least 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    url, server = bench_redis()
    configure_logging("console", "warning")
    web = WebBench(Bench(Redis.from_url(url), url), url)
    try:
        history = web.history(args.max_runs, args.samples)
        for phase in PHASES:
            phase(web)
    finally:
        web.stop()
        web.bench.cleanup()
        if server is not None:
            server.stop()
    largest = max(history)
    failed = [
        f"{name} p50 {history[largest][name][0]:.2f} ms at {largest} runs > {args.floor_ms:g} ms"
        for name in ("list", "detail")
        if history[largest][name][0] > args.floor_ms
    ]
    webhook_ratio = float(web.bench.figures["webhook_ratio"])
    if webhook_ratio < args.webhook_floor:
        failed.append(
            f"webhook deliveries per second {webhook_ratio:.3f}x direct triggers < {args.webhook_floor:g}x"
        )
    figures = ", ".join(
        f"{name} p50 {p50:.2f} ms p99 {p99:.2f} ms" for name, (p50, p99) in history[largest].items()
    )
    print(f"summary: GET over HTTP with {largest} stored runs: {figures}")
    for line in failed:
        print(f"floor failed: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
