"""Benchmark: signed webhook deliveries per second through the real web app (uvicorn, HTTP/1.1 with
keep-alive) into runs, and their latency; the rate limit off, the replay guard on.

Every delivery is a GitHub-signed JSON body (a fresh one each, so none is a replay): the route
reads it, verifies the HMAC, checks the flow, records the nonce and stores the run with its trigger
job (no worker runs them: this measures ingress). Run as
``python bench/webhook_bench.py [--deliveries N] [--concurrency C] [--floor PER_SECOND]``;
exits 1 below the floor.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.space import remove_space
from flowjobs import FlowDefinition, FlowRegistry
from flowjobs.client import FlowClient
from flowjobs.settings import load_settings
from flowjobs.web.app import create_app
from flowjobs.webhooks.schemes import Scheme, sign

SECRET = b"bench-secret-0123456789"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--floor", type=float, default=50.0, help="deliveries per second, at least")
    args = parser.parse_args()

    token = f"whbench{uuid.uuid4().hex[:8]}"
    settings = load_settings(queue=f"{token}-q", key_prefix=f"{token}:", webhook_rate_per_second=0)
    redis = Redis.from_url(settings.redis_url)
    definition = FlowDefinition.model_validate(
        {
            "id": str(uuid.uuid4()),
            "name": "webhook-bench",
            "steps": {"a": {"type": "Noop"}},
            "triggers": {
                "hook": {
                    "type": "Webhook",
                    "inputs": {
                        "webhookSlug": "bench",
                        "webhookScheme": "github",
                        "webhookSecret": SECRET.decode(),
                    },
                }
            },
        }
    )
    client = FlowClient(redis, FlowRegistry([definition]), settings.queue, key_prefix=settings.key_prefix)
    app = create_app(settings, client)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    local = threading.local()

    def deliver(n: int) -> tuple[int, float]:
        http: httpx.Client | None = getattr(local, "http", None)
        if http is None:
            http = local.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        body = b'{"orderId": %d, "bench": true}' % n
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature-256": sign(Scheme.github, SECRET, body),
        }
        started = time.perf_counter()
        status = http.post("/flows/api/webhook/bench", content=body, headers=headers).status_code
        return status, time.perf_counter() - started

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(deliver, range(-args.concurrency * 5, 0)))  # warm-up: connections, imports
            started = time.perf_counter()
            results = list(pool.map(deliver, range(args.deliveries)))
            elapsed = time.perf_counter() - started
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        remove_space(redis, prefix=settings.key_prefix, token=token, queue=settings.queue)

    refused = [status for status, _ in results if status != 202]
    latencies = sorted(seconds * 1000 for _, seconds in results)
    rate = len(results) / elapsed
    print(
        f"webhook deliveries: {len(results)} in {elapsed:.2f}s = {rate:.0f}/s "
        f"(concurrency {args.concurrency}); latency p50 {statistics.median(latencies):.1f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95) - 1]:.1f} ms; refused {len(refused)}"
    )
    if refused:
        print(f"FAIL: {len(refused)} deliveries refused (statuses {sorted(set(refused))})")
        return 1
    if rate < args.floor:
        print(f"FAIL: below the floor of {args.floor:g}/s")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
