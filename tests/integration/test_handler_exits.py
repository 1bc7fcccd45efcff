"""A handler raising ``SystemExit`` or ``KeyboardInterrupt`` fails its attempt once, with that reason;
the worker (forking or simple) goes on."""

from __future__ import annotations

from typing import Any

import pytest

from flowjobs import RunStatus, StepStatus
from tests.conftest import Space
from tests.integration.flows import flow, registry

EXITS = {
    "exit-code": ({"code": 5}, "SystemExit: 5"),
    "exit-bare": ({}, "SystemExit"),
    "interrupt": ({"interrupt": True}, "KeyboardInterrupt"),
}


@pytest.mark.parametrize("simple", [False, True], ids=["forking", "simple"])
def test_an_exiting_handler_fails_its_attempt_once_and_the_worker_goes_on(space: Space, simple: bool) -> None:
    steps: dict[str, dict[str, Any]] = {
        name: {"type": "Exit", "inputs": {**inputs, "key": f"{space.token}:{name}"}}
        for name, (inputs, _) in EXITS.items()
    }
    client = space.client(
        registry(
            flow("exits", steps),
            flow(
                "retried",
                {
                    "once-more": {
                        "type": "Exit",
                        "inputs": {"code": 7, "key": f"{space.token}:retried"},
                        "retry": {"max_attempts": 2},
                    }
                },
            ),
            flow("fine", {"a": {"type": "Noop"}}),
        )
    )
    worker = space.start_worker("exits", simple=simple)
    run = client.trigger("exits").wait(timeout=60)
    detail = client.get_run_detail(run.id)
    assert detail is not None and detail.status is RunStatus.Failed
    by_key = {step.step_key: step for step in detail.steps or []}
    for name, (_, reason) in EXITS.items():
        step = by_key[name]
        assert step.status is StepStatus.Failed and step.attempt_count == 1, (name, step)
        assert step.error_message == reason, (name, step.error_message)
        assert space.redis.lrange(f"{space.token}:{name}", 0, -1) == [b"1"], f"{name} ran more than once"

    retried = client.get_run_detail(client.trigger("retried").wait(timeout=60).id)
    assert retried is not None and retried.status is RunStatus.Failed
    (step,) = retried.steps or []
    assert [(a.status, a.error_message) for a in step.attempts or []] == [
        (StepStatus.Failed, "SystemExit: 7")
    ] * 2
    assert space.redis.lrange(f"{space.token}:retried", 0, -1) == [b"1", b"2"]

    assert client.trigger("fine").wait(timeout=30).status is RunStatus.Succeeded
    assert worker.poll() is None, "the worker must survive an exiting handler"
