"""Test fixtures: a real Redis (REDIS_URL, else 127.0.0.1:6379, else an embedded server), a key
prefix and queue per test, real RQ workers in-process or as subprocesses, and cleanup of exactly
the keys a test created."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import hypothesis
import pytest
import uvicorn
from redis import Redis
from redis.client import Pipeline
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from starlette.types import ASGIApp

import tests.handlers  # noqa: F401  (registers the test handlers on the default registry)
from flowjobs.store.scripts import CHECK_KEYS_ENV
from tests.polling import poll

# Every script of every test (and of the worker processes the tests start, which inherit this)
# runs with the key check: a script that touches a key it did not declare in KEYS fails.
os.environ[CHECK_KEYS_ENV] = "1"
from flowjobs.client import FlowClient
from flowjobs.core.handlers import default_handlers
from flowjobs.core.keys import Keys
from flowjobs.core.registry import FlowRegistry
from flowjobs.embedded import EmbeddedRedis, redis_answers
from flowjobs.engine import Engine
from flowjobs.factory import client_from_settings, engine_from_settings, runner_from_settings
from flowjobs.jobs import install_engine
from flowjobs.processes import stop_processes
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.settings import Settings
from flowjobs.store.retention import stored_job_ids
from flowjobs.worker import build_worker

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parent.parent
SESSION = uuid.uuid4().hex[:8]

# Property tests explore the same examples on every run (deterministic CI), with no per-example
# deadline (a shared 2-core machine is slow at times; speed is the benchmarks' business).
hypothesis.settings.register_profile("flowjobs", deadline=None, derandomize=True, print_blob=True)
hypothesis.settings.load_profile("flowjobs")


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    value = poll(condition, timeout)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value


def free_port() -> int:
    """A TCP port free on the loopback address now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(app: ASGIApp, lifespan: Literal["auto", "on", "off"] = "auto") -> Iterator[httpx.Client]:
    """``app`` on a uvicorn server (a thread of this process, a free port), and an HTTP client for
    it; both stopped on exit."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what="uvicorn")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET (0 when nothing answers)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def shut_down_cold(worker: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """Ask ``worker`` for a warm shutdown, then a cold one, and return its exit code. RQ takes a
    second signal within 1 s of the first it handled as a duplicate, and a loaded machine may
    handle the first late, so the second is repeated until the worker has exited."""
    worker.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return worker.wait(timeout=0.3)
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                raise AssertionError(f"no exit {timeout}s after a cold shutdown") from None
            worker.send_signal(signal.SIGTERM)


def wait_parked(client: FlowClient, run_id: object, step_key: str) -> None:
    """Until a WaitForSignal step of the run is parked: Pending again after its first attempt ran."""

    def parked() -> bool:
        run = client.get_run_detail(str(run_id))
        step = next((s for s in (run.steps if run else None) or [] if s.step_key == step_key), None)
        return step is not None and step.status.value == "Pending" and step.attempt_count >= 2

    wait_until(parked, timeout=30, what=f"{step_key} to park")


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every round-trip to Redis from now on, in order: a command's name, or ``pipeline``."""
    trips: list[str] = []
    real_command: Callable[..., Any] = Redis.execute_command
    real_execute = Pipeline.execute

    def command(self: Redis, *args: Any, **options: Any) -> Any:
        trips.append(str(args[0]))
        return real_command(self, *args, **options)

    def execute(self: Pipeline, raise_on_error: bool = True) -> Any:
        trips.append("pipeline")
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(Redis, "execute_command", command)
    monkeypatch.setattr(Pipeline, "execute", execute)
    return trips


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        os.environ["REDIS_URL"] = url
        yield url
        return
    with EmbeddedRedis() as server:
        os.environ["REDIS_URL"] = server.url
        yield server.url


@pytest.fixture(scope="session")
def redis(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


@dataclass
class Space:
    """One test's corner of Redis: its key prefix, queue, settings, and the processes it started."""

    redis: Redis
    settings: Settings
    token: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    def client(self, flows: FlowRegistry) -> FlowClient:
        return client_from_settings(self.settings, flows, redis=self.redis)

    def runner(self, **settings: Any) -> RQJobRunner:
        """The RQ runner of this space's settings (with ``settings`` instead of some)."""
        return runner_from_settings(self.settings.model_copy(update=settings), self.redis)

    def engine(self) -> Engine:
        return engine_from_settings(self.settings, redis=self.redis, handlers=default_handlers)

    def env(self) -> dict[str, str]:
        s = self.settings
        sentinel = {
            "FLOWJOBS_REDIS_SENTINELS": s.redis_sentinels,
            "FLOWJOBS_REDIS_SENTINEL_MASTER": s.redis_sentinel_master,
            "FLOWJOBS_REDIS_SENTINEL_PASSWORD": (
                s.redis_sentinel_password.get_secret_value() if s.redis_sentinel_password else None
            ),
            "FLOWJOBS_REDIS_SENTINEL_TLS": "true" if s.redis_sentinel_tls else None,
            "FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE": (
                str(s.redis_sentinel_tls_ca_file) if s.redis_sentinel_tls_ca_file else None
            ),
        }
        return {
            **os.environ,
            "REDIS_URL": s.redis_url,
            "FLOWJOBS_QUEUE": s.queue,
            "FLOWJOBS_KEY_PREFIX": s.key_prefix,
            "FLOWJOBS_HANDLER_MODULES": s.handler_modules,
            "FLOWJOBS_CLAIM_LEASE_SECONDS": str(s.claim_lease_seconds),
            "FLOWJOBS_RECOVERY_INTERVAL_SECONDS": str(s.recovery_interval_seconds),
            "FLOWJOBS_JOB_TIMEOUT_SECONDS": str(s.job_timeout_seconds),
            "FLOWJOBS_MAX_LOST_ATTEMPTS": str(s.max_lost_attempts),
            "FLOWJOBS_MAX_STEP_CRASHES": str(s.max_step_crashes),
            "FLOWJOBS_FLOWS_DIR": str(s.flows_dir),
            **{name: value for name, value in sentinel.items() if value is not None},
            "FLOWJOBS_REDIS_WAIT_REPLICAS": str(s.redis_wait_replicas),
            "FLOWJOBS_REDIS_WAIT_TIMEOUT_MS": str(s.redis_wait_timeout_ms),
            "FLOWJOBS_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        }

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -m flowjobs ARGS`` to the end with this space's settings (plus ``env``)."""
        return subprocess.run(
            [sys.executable, "-m", "flowjobs", *args],
            env={**self.env(), **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``python -m flowjobs ARGS`` with this space's settings, in its own process group."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowjobs", *args],
            env=self.env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def start_worker(self, name: str, *, simple: bool = False) -> subprocess.Popen[bytes]:
        """A worker subprocess; its RQ name carries the test's token so cleanup finds its keys."""
        return self.start("worker", "--name", f"{self.token}-{name}", *(["--simple"] if simple else []))

    def start_ready_worker(self, name: str, *, simple: bool = False) -> subprocess.Popen[bytes]:
        """``start_worker``, returning once it listens on the queue: a deadline test's clock starts
        at trigger time, so the worker must not still be booting (a loaded machine takes seconds)."""
        worker = self.start_worker(name, simple=simple)
        queue = Queue(self.settings.queue, connection=self.redis, serializer=JSONSerializer)
        registered = f"{self.token}-{name}"
        wait_until(
            lambda: any(w.name == registered for w in Worker.all(connection=self.redis, queue=queue)),
            timeout=30,
            what=f"worker {name} to register",
        )
        return worker

    def drain(self) -> None:
        """Run every queued job in this process with a SimpleWorker (burst), using the test handlers."""
        install_engine(self.engine())
        try:
            build_worker(self.redis, self.settings.queue, simple=True, name=f"{self.token}-inproc").work(
                burst=True, with_scheduler=False, logging_level="WARNING"
            )
        finally:
            install_engine(None)

    def stop_processes(self) -> None:
        """Stop every process this space started, then kill what is left in their process groups:
        a worker SIGKILLed by a test (KillHorse under ``--simple``) leaves RQ's scheduler process,
        forked by it, alive in its group."""
        stop_processes(self.processes)
        for proc in self.processes:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # ``start`` made each one its group's leader

    def cleanup(self) -> None:
        """Delete the RQ job hashes of this space's jobs, then every key carrying its token."""
        job_ids = sorted(stored_job_ids(self.redis, self.keys))
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            self.redis.delete(*[f"rq:job:{j}" for j in chunk], *[f"rq:results:{j}" for j in chunk])
        for key in self.redis.scan_iter(match=f"*{self.token}*", count=1000):
            self.redis.delete(key)
        self.redis.srem("rq:queues", f"rq:queue:{self.settings.queue}")


@pytest.fixture
def space(redis: Redis, redis_url: str) -> Iterator[Space]:
    token = f"fjt{SESSION}{uuid.uuid4().hex[:6]}"
    settings = Settings(
        redis_url=redis_url,
        queue=f"{token}-q",
        key_prefix=f"{token}:",
        handler_modules="tests.handlers",
        claim_lease_seconds=2,
        recovery_interval_seconds=0.5,
        flows_dir=ROOT / "config" / "flows",
    )
    space = Space(redis=redis, settings=settings, token=token)
    try:
        yield space
    finally:
        space.stop_processes()
        space.cleanup()
