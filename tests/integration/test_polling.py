"""Polling steps on real RQ workers: ``StepResult.pending`` and the built-in ``poll`` options."""

from __future__ import annotations

import itertools
import json
from typing import Any
from uuid import UUID

from flowjobs import FlowDefinition, FlowStepRecord, RunStatus, StepStatus
from flowjobs.core.job_calls import step_job_id
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def _step(space: Space, run_id: UUID, key: str) -> FlowStepRecord | None:
    detail = space.client(registry()).get_run_detail(run_id)
    assert detail is not None
    return next((s for s in detail.steps or [] if s.step_key == key), None)


def _events(space: Space, run_id: UUID, step_key: str) -> list[tuple[str, str | None]]:
    return [
        (e.type.value, e.message)
        for e in space.engine().store.history.events(run_id)
        if e.step_key == step_key
    ]


def _poll_flow(name: str, poll: dict[str, Any], done_on: int) -> FlowDefinition:
    return flow(
        name,
        {
            "check": {"type": "PollStatus", "inputs": {"done_on": done_on}, "poll": poll},
            "after": {"type": "Noop", "run_after": ["check"]},
        },
    )


def test_handler_pending_reschedules_the_step_until_it_is_done(space: Space) -> None:
    definition = flow(
        "pending",
        {
            "wait": {"type": "PendingUntil", "inputs": {"done_on": 3, "delay": 0.2}},
            "after": {"type": "Noop", "run_after": ["wait"]},
        },
    )
    client = space.client(registry(definition))
    space.start_worker("w")
    handle = client.trigger("pending")

    def parked() -> FlowStepRecord | None:
        step = _step(space, handle.run_id, "wait")
        ok = step is not None and step.status is StepStatus.Pending and step.attempt_count >= 2
        return step if ok else None

    waiting = wait_until(parked, timeout=30, what="the step to wait as Pending between attempts")
    assert isinstance(waiting, FlowStepRecord)
    assert waiting.completed_at is None
    assert waiting.job_id == step_job_id(handle.run_id, "wait", waiting.attempt_count)
    assert client.get_run(handle.run_id).status is RunStatus.Running  # type: ignore[union-attr]

    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Succeeded
    step = _step(space, handle.run_id, "wait")
    assert step is not None
    assert step.status is StepStatus.Succeeded
    assert step.attempt_count == 3
    assert json.loads(step.output_json or "null") == {"attempts": 3}
    attempts = step.attempts or []
    assert [(a.attempt, a.status) for a in attempts] == [
        (1, StepStatus.Pending),
        (2, StepStatus.Pending),
        (3, StepStatus.Succeeded),
    ]
    assert all(a.error_message is None for a in attempts)
    assert len({a.job_id for a in attempts}) == 3
    # No worker held the step in between: each later attempt started at least the delay after.
    for earlier, later in itertools.pairwise(attempts):
        assert (later.started_at - earlier.completed_at).total_seconds() >= 0.19  # type: ignore[operator]
    assert [e for e in _events(space, handle.run_id, "wait") if e[0] == "step.pending"] == [
        ("step.pending", "attempt 2 in 0.2s"),
        ("step.pending", "attempt 3 in 0.2s"),
    ]
    after = _step(space, handle.run_id, "after")
    assert after is not None and after.status is StepStatus.Succeeded


def test_builtin_poll_repeats_until_the_condition_holds(space: Space) -> None:
    poll = {"interval_seconds": 0.2, "condition_path": "state", "condition_equals": "done"}
    client = space.client(registry(_poll_flow("polled", poll, done_on=3)))
    space.start_worker("w")
    handle = client.trigger("polled")
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Succeeded

    step = _step(space, handle.run_id, "check")
    assert step is not None
    assert step.status is StepStatus.Succeeded
    assert step.attempt_count == 3
    assert json.loads(step.output_json or "null") == {"state": "done", "attempt": 3}
    attempts = step.attempts or []
    assert [(a.attempt, a.status) for a in attempts] == [
        (1, StepStatus.Pending),
        (2, StepStatus.Pending),
        (3, StepStatus.Succeeded),
    ]
    # Each poll's output is kept on its attempt record.
    assert [json.loads(a.output_json or "null")["state"] for a in attempts] == ["working", "working", "done"]
    assert [e[0] for e in _events(space, handle.run_id, "check")].count("step.pending") == 2
    after = _step(space, handle.run_id, "after")
    assert after is not None and after.status is StepStatus.Succeeded


def test_builtin_poll_honours_min_attempts(space: Space) -> None:
    poll = {
        "interval_seconds": 0.2,
        "min_attempts": 3,
        "condition_path": "state",
        "condition_equals": "done",
    }
    client = space.client(registry(_poll_flow("min-polls", poll, done_on=1)))
    space.start_worker("w")
    handle = client.trigger("min-polls")
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Succeeded

    step = _step(space, handle.run_id, "check")
    assert step is not None
    assert step.status is StepStatus.Succeeded
    assert step.attempt_count == 3
    assert json.loads(step.output_json or "null") == {"state": "done", "attempt": 3}
    attempts = step.attempts or []
    # The condition already held on the first poll, but three polls were required.
    assert [json.loads(a.output_json or "null")["state"] for a in attempts] == ["done", "done", "done"]
    assert [a.status for a in attempts] == [StepStatus.Pending, StepStatus.Pending, StepStatus.Succeeded]


def test_builtin_poll_fails_the_step_when_it_times_out(space: Space) -> None:
    poll = {
        "interval_seconds": 0.2,
        "timeout_seconds": 0.5,
        "condition_path": "state",
        "condition_equals": "done",
    }
    client = space.client(registry(_poll_flow("poll-timeout", poll, done_on=99)))
    space.start_worker("w")
    handle = client.trigger("poll-timeout")
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Failed

    step = _step(space, handle.run_id, "check")
    assert step is not None
    assert step.status is StepStatus.Failed
    message = step.error_message or ""
    assert message.startswith("Polling timed out after 0.5s: state == 'done' not reached in "), message
    assert message.endswith(f" {step.attempt_count} polls.")
    assert step.attempt_count >= 2
    attempts = step.attempts or []
    assert [a.status for a in attempts] == [StepStatus.Pending] * (len(attempts) - 1) + [StepStatus.Failed]
    assert json.loads(attempts[-1].output_json or "null")["state"] == "working"
    events = _events(space, handle.run_id, "check")
    assert events[-1] == ("step.failed", message)
    after = _step(space, handle.run_id, "after")
    assert after is not None and after.status is StepStatus.Skipped
