"""Step handlers the tests' flows use; worker subprocesses import this module (FLOWJOBS_HANDLER_MODULES)."""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

from redis import Redis

from flowjobs import StepContext, StepResult, handler


@cache
def _redis() -> Redis:
    return Redis.from_url(os.environ["REDIS_URL"])


def _wait_for(key: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _redis().exists(key):
            return True
        time.sleep(0.01)
    return False


@handler("Noop")
def noop(ctx: StepContext, inputs: dict[str, Any]) -> None:
    """Does nothing."""


@handler("Echo")
def echo(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Returns its inputs, the step key and the attempt."""
    return {"inputs": inputs, "step": ctx.step_key, "attempt": ctx.attempt}


@handler("Record")
def record(ctx: StepContext, inputs: dict[str, Any]) -> dict[str, Any]:
    """Appends ``<run>:<step>`` to the list ``inputs.key``: counts executions across processes."""
    _redis().rpush(inputs["key"], f"{ctx.run_id}:{ctx.step_key}:{os.getpid()}")
    return {"pid": os.getpid()}


@handler("Boom")
def boom(ctx: StepContext, inputs: dict[str, Any]) -> None:
    """Raises."""
    raise RuntimeError(inputs.get("message", "boom"))


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
