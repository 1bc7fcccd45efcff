"""A Redis restart under running processes: they log, back off and resume; nothing is lost."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from flowjobs import RunStatus, StepStatus
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry

OUTAGE_SECONDS = 4.0
PERSIST = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")


@dataclass
class ThrowawayRedis:
    """A redis-server of this test alone, persisting every write (AOF, fsync always) so a restart
    keeps the data, as a production Redis with persistence would."""

    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir), *PERSIST],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10, what="the throw-away Redis to answer")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def _answers(self) -> bool:
        try:
            return bool(Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except RedisConnectionError:
            return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(_free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _on(server: ThrowawayRedis, space: Space) -> Space:
    """``space`` moved to the throw-away server (same token, queue and processes list)."""
    return replace(
        space,
        redis=Redis.from_url(server.url),
        settings=space.settings.model_copy(update={"redis_url": server.url}),
        processes=space.processes,
    )


@pytest.mark.slow
def test_worker_and_scheduler_ride_out_a_redis_restart(throwaway_redis: ThrowawayRedis, space: Space) -> None:
    # Requested before ``space``: the server outlives the processes the fixture stops.
    outage = _on(throwaway_redis, space)
    definition = flow(
        "outage",
        {
            "slow": {"type": "Sleep", "inputs": {"seconds": 2}},
            "after": {"type": "Noop", "run_after": ["slow"]},
        },
    )
    client = outage.client(registry(definition))
    processes = [outage.start_worker("survivor"), outage.start("scheduler")]
    store = outage.engine().store
    before = client.trigger("outage")
    wait_until(
        lambda: store.runs.step_fields(str(before.run_id), "slow").get("status") == "Running",
        timeout=30,
        what="the step to be running when Redis goes away",
    )

    throwaway_redis.kill()
    time.sleep(OUTAGE_SECONDS)  # the outage itself: the step finishes while Redis is away
    assert [p.poll() for p in processes] == [None, None]
    throwaway_redis.start()

    client = outage.client(registry(definition))  # fresh connections
    after = client.trigger("outage")
    assert after.wait(timeout=60).status is RunStatus.Succeeded
    run = before.wait(timeout=60)
    assert run.status is RunStatus.Succeeded, "the run in flight during the outage was not lost"
    detail = client.get_run_detail(run.id)
    assert detail is not None
    steps = {s.step_key: s for s in detail.steps or []}
    assert steps["slow"].status is StepStatus.Succeeded and steps["after"].status is StepStatus.Succeeded
    assert [p.poll() for p in processes] == [None, None], "a process exited"


@pytest.mark.slow
def test_a_retry_due_after_a_redis_restart_runs_within_seconds(
    throwaway_redis: ThrowawayRedis, space: Space
) -> None:
    # A step that ends while Redis is away ends the worker's loop, and its RQ scheduler dies holding
    # its lock, which the restarted Redis keeps for 61 s: the next loop's scheduler must not wait that
    # lock out before it enqueues a retry due 1 s after a later step fails.
    outage = _on(throwaway_redis, space)
    definition = flow(
        "retry-after-outage",
        {
            "slow": {"type": "Sleep", "inputs": {"seconds": OUTAGE_SECONDS / 2}},
            "flaky": {
                "type": "Flaky",
                "inputs": {"key": f"{outage.token}:flaky", "succeed_on": 2},
                "retry": {"max_attempts": 2, "backoff_seconds": 1},
                "run_after": ["slow"],
            },
        },
    )
    client = outage.client(registry(definition))
    worker = outage.start_worker("retrier")
    store = outage.engine().store
    handle = client.trigger("retry-after-outage")
    run_id = str(handle.run_id)
    wait_until(
        lambda: store.runs.step_fields(run_id, "slow").get("status") == "Running",
        timeout=30,
        what="the first step to be running when Redis goes away",
    )

    throwaway_redis.kill()
    time.sleep(OUTAGE_SECONDS)  # the outage itself: the first step ends while Redis is away
    throwaway_redis.start()

    store = outage.engine().store  # fresh connections
    wait_until(
        lambda: store.runs.step_fields(run_id, "flaky").get("status") == "Succeeded",
        timeout=20,
        what="the retry within seconds of Redis returning (not once the dead scheduler's lock expired)",
    )
    assert int(outage.redis.get(f"{outage.token}:flaky") or 0) == 2, "the retry did not run"
    assert handle.wait(timeout=30).status is RunStatus.Succeeded
    assert worker.poll() is None, "the worker exited"
