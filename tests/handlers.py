"""Step handlers the tests' flows use; worker subprocesses import this module (FLOWJOBS_HANDLER_MODULES)."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import threading
import time
from functools import cache
from typing import Any

from opentelemetry import trace
from redis import Redis
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from flowjobs import StepContext, StepResult, StepStatus, handler
from tests.polling import poll


@cache
def _redis() -> Redis:
    return Redis.from_url(os.environ["REDIS_URL"])


def _wait_for(key: str, timeout: float) -> bool:
    """True once ``key`` exists in Redis, False after ``timeout`` seconds."""
    return bool(poll(lambda: _redis().exists(key), timeout))


@handler("Noop")
def noop(ctx: StepContext, inputs: dict[str, Any]) -> None:
    """Does nothing."""


@handler("Echo")
def echo(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Returns its inputs, the step key and the attempt."""
    return {"inputs": inputs, "step": ctx.step_key, "attempt": ctx.attempt}


@handler("EngineConnection")
def engine_connection(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """The process running this step and the Redis connection its engine's client uses."""
    from flowjobs.jobs import current_engine

    return {"pid": os.getpid(), "client_id": current_engine().store.redis.client_id()}


@handler("OwnJob")
def own_job(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """What RQ says of the job running this step, while it runs."""
    redis = _redis()
    job = Job.fetch(ctx.job_id or "", connection=redis, serializer=JSONSerializer)
    started = StartedJobRegistry(job.origin, connection=redis)
    entries = redis.zrange(started.key, 0, -1, withscores=True)
    heartbeat_until = max((score for _, score in entries), default=0)
    worker_key = f"rq:worker:{job.worker_name}"
    worker_ttl = redis.ttl(worker_key)

    def busy_with_it() -> bool:
        state, current = redis.hmget(worker_key, "state", "current_job")
        return state == b"busy" and current == job.id.encode()

    # A SimpleWorker's hash may show its previous job for up to a second (README, "RQ's bookkeeping").
    busy = bool(poll(busy_with_it, 2.5))
    return {
        "status": job.get_status(),
        "worker": job.worker_name,
        "started_registry": job.id in started.get_job_ids(),
        "started_at": job.started_at is not None,
        # RQ clears a job's expiry before it runs (a requeued job's hash keeps its last end's).
        "expires": redis.ttl(job.key) != -1,
        # A step job's executions set goes with its run (README, "RQ's bookkeeping").
        "executions_expire": redis.ttl(job.execution_registry.key) != -1,
        # RQ keeps the worker's hash at least as long as the job's heartbeat.
        "worker_outlives_heartbeat": time.time() + worker_ttl >= heartbeat_until - 1,
        "worker_busy_with_it": busy,
    }


@handler("Record")
def record(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Appends ``<run>:<step>`` to the list ``inputs.key``: counts executions across processes."""
    _redis().rpush(inputs["key"], f"{ctx.run_id}:{ctx.step_key}:{os.getpid()}")
    return {"pid": os.getpid()}


@handler("Boom")
def boom(ctx: StepContext, inputs: dict[str, Any]) -> None:
    """Raises."""
    raise RuntimeError(inputs.get("message", "boom"))


@handler("Traced")
def traced(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Opens a span of its own (it nests under the step's span when tracing is on)."""
    with trace.get_tracer("tests.handlers").start_as_current_span("handler.own") as span:
        span.set_attribute("step", ctx.step_key)
    return {"traced": True}


@handler("Refuse")
def refuse(ctx: StepContext, inputs: dict[str, Any]) -> StepResult:
    """Fails on purpose through StepResult."""
    return StepResult.failed(inputs.get("message", "refused"))


@handler("Unserialisable")
def unserialisable(ctx: StepContext, inputs: dict[str, Any]) -> object:
    """Returns something JSON cannot hold."""
    return {"value": object()}


@handler("Barrier")
def barrier(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Marks ``inputs.mine``, waits for ``inputs.peer``: two of them only finish when run in parallel."""
    _redis().set(inputs["mine"], os.getpid(), ex=60)
    if not _wait_for(inputs["peer"], float(inputs.get("timeout", 20))):
        raise TimeoutError(f"peer {inputs['peer']} never started: the steps did not run in parallel")
    return {"pid": os.getpid()}


@handler("Block")
def block(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """On attempt 1, records its pid under ``inputs.pid_key`` and waits for ``inputs.release``."""
    if ctx.attempt == 1:
        _redis().set(inputs["pid_key"], os.getpid(), ex=120)
        _wait_for(inputs["release"], float(inputs.get("timeout", 60)))
    _redis().rpush(inputs["done_key"], f"{ctx.attempt}:{os.getpid()}")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@handler("Flaky")
def flaky(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Fails until ``inputs.succeed_on`` attempts were made; counts calls under ``inputs.key``."""
    calls = _redis().incr(inputs["key"])
    if ctx.attempt < int(inputs["succeed_on"]):
        raise ConnectionError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt, "calls": calls}


@handler("Sleep")
def sleep(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Sleeps ``inputs.seconds`` (to be cut short by a step timeout)."""
    time.sleep(float(inputs["seconds"]))
    return {"slept": inputs["seconds"]}


@handler("PollStatus")
def poll_status(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Reports ``state: done`` from attempt ``inputs.done_on`` on, ``working`` before."""
    return {"state": "done" if ctx.attempt >= int(inputs["done_on"]) else "working", "attempt": ctx.attempt}


@handler("PendingUntil")
def pending_until(ctx: StepContext, inputs: dict[str, Any]) -> Any:
    """Asks to be run again after ``inputs.delay`` seconds until attempt ``inputs.done_on``."""
    if ctx.attempt < int(inputs["done_on"]):
        return StepResult.pending(float(inputs.get("delay", 0)))
    return {"attempts": ctx.attempt}


@handler("Track")
def track(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Counts iterations in flight under ``inputs.key`` and keeps the maximum under ``<key>:max``."""
    key = inputs["key"]
    now = _redis().incr(f"{key}:now")
    _redis().eval(
        "if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then "
        "redis.call('SET', KEYS[1], ARGV[1]) end",
        1,
        f"{key}:max",
        now,
    )
    time.sleep(float(inputs.get("hold", 0.2)))
    _redis().decr(f"{key}:now")
    _redis().rpush(
        f"{key}:done", json.dumps({"index": inputs.get("__loopIndex"), "item": inputs.get("__loopItem")})
    )
    return {"item": inputs.get("__loopItem"), "index": inputs.get("__loopIndex")}


@handler("Deep")
def deep(ctx: StepContext, inputs: dict[str, Any]) -> Any:
    """Returns a list nested ``inputs.depth`` levels deep."""
    value: Any = []
    for _ in range(int(inputs["depth"])):
        value = [value]
    return value


@handler("SayRunning")
def say_running(ctx: StepContext, inputs: dict[str, Any]) -> StepResult:
    """Returns a status a handler may not return."""
    return StepResult(StepStatus.Running)


@handler("HoldGil")
def hold_gil(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Spends at least ``inputs.seconds`` in ONE regex call, which never releases the GIL
    (catastrophic backtracking); returns that call's time and the longest pause a ticking thread
    of the process saw. A call that came out short (the calibration ran on a busier machine) is
    repeated one character longer, so the bound holds by construction."""
    length, took = 14, 0.0
    while took < 0.05:  # calibrate: each extra character doubles the time
        length += 2
        started = time.perf_counter()
        re.match(r"(a*)*b", "a" * length)
        took = time.perf_counter() - started
    length += max(0, math.ceil(math.log2(float(inputs["seconds"]) / took)))
    ticks = [time.monotonic()]
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(0.05):
            ticks.append(time.monotonic())

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    seconds = 0.0
    while seconds < float(inputs["seconds"]):
        started = time.perf_counter()
        re.match(r"(a*)*b", "a" * length)
        seconds = time.perf_counter() - started
        length += 1
    stop.set()
    ticker.join()
    return {"seconds": seconds, "longest_pause": max(b - a for a, b in itertools.pairwise(ticks))}


@handler("KillHorse")
def kill_horse(ctx: StepContext, inputs: dict[str, Any]) -> None:
    """SIGKILLs the process running it (a poison step: a forking worker loses its work-horse), or
    ends it with ``os._exit(inputs.exit_code)``; counts calls under ``inputs.key`` first."""
    if "key" in inputs:
        _redis().rpush(inputs["key"], ctx.attempt)
    if "exit_code" in inputs:
        os._exit(int(inputs["exit_code"]))
    os.kill(os.getpid(), signal.SIGKILL)


@handler("ReadTrigger")
def read_trigger(ctx: StepContext, inputs: dict[str, Any]) -> Any:
    """Returns the trigger payload as the handler's context gives it."""
    return {"data": ctx.trigger_data}


@handler("AwaitCancel")
def await_cancel(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Marks ``inputs.started``, then waits (up to ``inputs.timeout`` s) for the run's cancel request."""
    _redis().set(inputs["started"], "1", ex=60)
    return {"saw_cancel": bool(poll(lambda: ctx.cancel_requested, float(inputs.get("timeout", 30))))}


@handler("Exit")
def exit_handler(ctx: StepContext, inputs: dict[str, Any]) -> None:
    """Counts its calls under ``inputs.key``, then raises ``SystemExit`` (with ``inputs.code`` if
    given) or, with ``inputs.interrupt``, ``KeyboardInterrupt``."""
    _redis().rpush(inputs["key"], ctx.attempt)
    if inputs.get("interrupt"):
        raise KeyboardInterrupt
    if "code" in inputs:
        raise SystemExit(inputs["code"])
    raise SystemExit


@handler("PendingFor")
def pending_for(ctx: StepContext, inputs: dict[str, Any]) -> Any:
    """Counts its calls under ``inputs.key``; asks to be run again after ``inputs.delay`` (as given, or
    through ``float()`` with ``inputs.as_float``: JSON has no NaN) on its first attempt, succeeds on
    the next."""
    _redis().rpush(inputs["key"], ctx.attempt)
    if ctx.attempt == 1:
        delay = inputs["delay"]
        return StepResult.pending(float(delay) if inputs.get("as_float") else delay)
    return {"attempts": ctx.attempt}
