"""Retries with backoff, per-step job timeouts and run deadlines, on real RQ workers."""

from __future__ import annotations

import itertools
import json
from datetime import timedelta
from uuid import UUID

from rq.job import Job
from rq.serializers import JSONSerializer

from flowjobs import FlowDefinition, FlowRunRecord, FlowStepRecord, RunStatus, StepStatus
from flowjobs.core.job_calls import JobState, step_job_id
from flowjobs.core.keys import step_member
from flowjobs.core.planner import SKIP_REASON
from flowjobs.recovery import TIMED_OUT_REASON
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def _detail(space: Space, run_id: UUID) -> FlowRunRecord:
    detail = space.client(registry()).get_run_detail(run_id)
    assert detail is not None
    return detail


def _steps(detail: FlowRunRecord) -> dict[str, FlowStepRecord]:
    return {s.step_key: s for s in detail.steps or []}


def _events(space: Space, run_id: UUID) -> list[tuple[str, str | None, str | None]]:
    return [(e.type.value, e.step_key, e.message) for e in space.engine().store.history.events(run_id)]


def _flaky(space: Space, name: str, succeed_on: int, retry: dict[str, float]) -> tuple[FlowDefinition, str]:
    calls = f"{space.token}:{name}:calls"
    definition = flow(
        name,
        {
            "call": {
                "type": "Flaky",
                "inputs": {"key": calls, "succeed_on": succeed_on},
                "retry": retry,
            },
            "after": {"type": "Noop", "run_after": ["call"]},
        },
    )
    return definition, calls


def test_flaky_step_is_retried_with_backoff_until_it_succeeds(space: Space) -> None:
    definition, calls = _flaky(space, "flaky-ok", 3, {"max_attempts": 3, "backoff_seconds": 0.2})
    client = space.client(registry(definition))
    space.start_worker("w")
    handle = client.trigger("flaky-ok")
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Succeeded

    steps = _steps(_detail(space, handle.run_id))
    call = steps["call"]
    assert call.status is StepStatus.Succeeded
    assert call.attempt_count == 3
    assert call.error_message is None
    assert json.loads(call.output_json or "null") == {"attempt": 3, "calls": 3}
    assert int(space.redis.get(calls) or 0) == 3

    attempts = call.attempts or []
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert [a.status for a in attempts] == [StepStatus.Failed, StepStatus.Failed, StepStatus.Succeeded]
    assert attempts[0].error_message == "ConnectionError: flaky failure on attempt 1"
    assert attempts[1].error_message == "ConnectionError: flaky failure on attempt 2"
    assert attempts[2].error_message is None
    job_ids = [a.job_id for a in attempts]
    assert job_ids == [step_job_id(handle.run_id, "call", n) for n in (1, 2, 3)]
    assert len(set(job_ids)) == 3
    assert call.job_id == job_ids[-1]
    for number, job_id in enumerate(job_ids, start=1):
        job = Job.fetch(job_id or "", connection=space.redis, serializer=JSONSerializer)
        assert job.meta["attempt"] == number
        # Each failed attempt's job failed in RQ too (rq-dashboard's failed list), the last finished.
        assert job.get_status() == ("finished" if number == 3 else "failed")
        found = client.find_run_by_job(job_id or "")
        assert found is not None and found.id == handle.run_id

    # Backoff: 0.2 s before attempt 2, 0.2 * 2 before attempt 3 (millisecond-rounded stamps).
    gaps = [
        (later.started_at - earlier.completed_at).total_seconds()  # type: ignore[operator]
        for earlier, later in itertools.pairwise(attempts)
    ]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.39, gaps

    events = _events(space, handle.run_id)
    retried = [e for e in events if e[0] == "step.retried"]
    assert retried == [
        ("step.retried", "call", "attempt 2 in 0.2s"),
        ("step.retried", "call", "attempt 3 in 0.4s"),
    ]
    assert [e for e in events if e[0] == "step.failed"] == []
    assert steps["after"].status is StepStatus.Succeeded


def test_retries_exhausted_fail_the_step_and_skip_its_dependents(space: Space) -> None:
    definition, calls = _flaky(space, "flaky-ko", 5, {"max_attempts": 2, "backoff_seconds": 0.2})
    client = space.client(registry(definition))
    space.start_worker("w")
    handle = client.trigger("flaky-ko")
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Failed

    steps = _steps(_detail(space, handle.run_id))
    call = steps["call"]
    assert call.status is StepStatus.Failed
    assert call.attempt_count == 2
    assert call.error_message == "ConnectionError: flaky failure on attempt 2"
    assert [(a.attempt, a.status) for a in call.attempts or []] == [
        (1, StepStatus.Failed),
        (2, StepStatus.Failed),
    ]
    assert int(space.redis.get(calls) or 0) == 2
    after = steps["after"]
    assert after.status is StepStatus.Skipped
    assert after.error_message == SKIP_REASON
    assert after.job_id is None

    events = _events(space, handle.run_id)
    assert [e[0] for e in events if e[1] == "call"] == [
        "step.started",
        "step.retried",
        "step.started",
        "step.failed",
    ]
    assert events[-1] == ("run.completed", None, "Failed")


def test_zero_backoff_retries_run_in_process_and_delayed_ones_wait_for_rq_scheduler(space: Space) -> None:
    now_def, now_calls = _flaky(space, "retry-now", 3, {"max_attempts": 4, "backoff_seconds": 0})
    later_def, later_calls = _flaky(space, "retry-later", 2, {"max_attempts": 2, "backoff_seconds": 30})
    client = space.client(registry(now_def, later_def))
    now = client.trigger("retry-now")
    later = client.trigger("retry-later")
    space.drain()

    # Zero delay: the next attempt is enqueued at once, so the burst worker runs all of them.
    assert client.get_run(now.run_id).status is RunStatus.Succeeded  # type: ignore[union-attr]
    call = _steps(_detail(space, now.run_id))["call"]
    assert call.status is StepStatus.Succeeded
    assert call.attempt_count == 3
    assert [(a.attempt, a.status) for a in call.attempts or []] == [
        (1, StepStatus.Failed),
        (2, StepStatus.Failed),
        (3, StepStatus.Succeeded),
    ]
    assert len({a.job_id for a in call.attempts or []}) == 3
    assert int(space.redis.get(now_calls) or 0) == 3
    assert [e[2] for e in _events(space, now.run_id) if e[0] == "step.retried"] == [
        "attempt 2 in 0s",
        "attempt 3 in 0s",
    ]

    # A 30 s backoff: attempt 2 sits in RQ's scheduled registry; the drain (no RQ scheduler) leaves it.
    assert client.get_run(later.run_id).status is RunStatus.Running  # type: ignore[union-attr]
    waiting = _steps(_detail(space, later.run_id))["call"]
    assert waiting.status is StepStatus.Pending
    assert waiting.attempt_count == 2
    assert waiting.job_id == step_job_id(later.run_id, "call", 2)
    assert waiting.error_message == "ConnectionError: flaky failure on attempt 1"
    assert [(a.attempt, a.status) for a in waiting.attempts or []] == [(1, StepStatus.Failed)]
    assert int(space.redis.get(later_calls) or 0) == 1
    runner = space.runner()
    assert runner.state(waiting.job_id or "") is JobState.Scheduled


def test_step_timeout_fails_the_attempt_and_the_worker_survives(space: Space) -> None:
    sleepy = flow(
        "sleepy",
        {
            "nap": {"type": "Sleep", "inputs": {"seconds": 30}, "timeout_seconds": 1},
            "after": {"type": "Noop", "run_after": ["nap"]},
        },
    )
    quick = flow("quick", {"only": {"type": "Echo", "inputs": {"x": 1}}})
    client = space.client(registry(sleepy, quick))
    worker = space.start_worker("forking")
    handle = client.trigger("sleepy")
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Failed

    steps = _steps(_detail(space, handle.run_id))
    nap = steps["nap"]
    assert nap.status is StepStatus.Failed
    assert nap.attempt_count == 1
    assert "timed out" in (nap.error_message or "")
    assert "1s" in (nap.error_message or "")
    assert nap.started_at is not None and nap.completed_at is not None
    elapsed = (nap.completed_at - nap.started_at).total_seconds()
    assert 0.9 <= elapsed < 20, elapsed
    assert [(a.status, a.error_message) for a in nap.attempts or []] == [
        (StepStatus.Failed, nap.error_message)
    ]
    job = Job.fetch(nap.job_id or "", connection=space.redis, serializer=JSONSerializer)
    assert job.timeout == 1
    assert steps["after"].status is StepStatus.Skipped

    assert worker.poll() is None, "the worker died with the timed-out step"
    second = client.trigger("quick").wait(timeout=30)
    assert second.status is RunStatus.Succeeded
    assert worker.poll() is None


def test_run_deadline_ends_a_running_run_as_timed_out(space: Space) -> None:
    record_key = f"{space.token}:second"
    definition = flow(
        "deadline",
        {
            "first": {"type": "Sleep", "inputs": {"seconds": 2}},
            "second": {"type": "Record", "run_after": ["first"], "inputs": {"key": record_key}},
        },
    )
    client = space.client(registry(definition))
    space.start_ready_worker("w")
    space.start("scheduler")
    handle = client.trigger("deadline", data={"runTimeoutSeconds": 1})
    stored = client.get_run(handle.run_id)
    assert stored is not None and stored.timeout_at is not None
    assert stored.timeout_at - stored.started_at == timedelta(seconds=1)

    run = handle.wait(timeout=30)
    assert run.status is RunStatus.TimedOut
    assert run.timed_out_at is not None and run.completed_at is not None
    assert run.timed_out_at >= run.timeout_at  # type: ignore[operator]
    assert run.completed_at >= run.timed_out_at

    # Let the sleeping step finish: its completion must not dispatch `second` nor reopen the run.
    first_job = step_job_id(handle.run_id, "first", 1)
    wait_until(
        lambda: (
            Job.fetch(first_job, connection=space.redis, serializer=JSONSerializer).get_status()
            in ("finished", "failed")
        ),
        timeout=20,
        what="the sleeping step's job to end",
    )
    after = _detail(space, handle.run_id)
    assert after.status is RunStatus.TimedOut
    assert after.completed_at == run.completed_at
    steps = _steps(after)
    assert "first" in steps
    if "second" in steps:
        assert steps["second"].status is StepStatus.Skipped
        assert steps["second"].error_message == TIMED_OUT_REASON
    assert space.redis.llen(record_key) == 0
    events = _events(space, handle.run_id)
    assert [e for e in events if e[0] == "run.completed"] == [("run.completed", None, "TimedOut")]
    assert not [e for e in events if e[1] == "second" and e[0] == "step.started"]
    assert space.redis.zscore(space.keys.deadlines(), str(handle.run_id)) is None


def test_run_deadline_ends_a_run_whose_step_is_parked(space: Space) -> None:
    definition = flow(
        "parked",
        {
            "wait": {"type": "PendingUntil", "inputs": {"done_on": 99, "delay": 30}},
            "after": {"type": "Noop", "run_after": ["wait"]},
        },
    )
    client = space.client(registry(definition))
    space.start_ready_worker("w")
    handle = client.trigger("parked", data={"runTimeoutSeconds": 1})

    def parked() -> bool:
        step = _steps(_detail(space, handle.run_id)).get("wait")
        return step is not None and step.status is StepStatus.Pending and step.attempt_count == 2

    wait_until(parked, timeout=20, what="the step to park")
    # Only the scheduler's sweeper can end it now: no step job runs for another 30 s.
    space.start("scheduler")
    run = handle.wait(timeout=20)
    assert run.status is RunStatus.TimedOut
    assert run.timed_out_at is not None and run.completed_at is not None

    steps = _steps(_detail(space, handle.run_id))
    wait = steps["wait"]
    assert wait.status is StepStatus.Skipped
    assert wait.error_message == TIMED_OUT_REASON
    assert wait.completed_at is not None
    assert [(a.attempt, a.status) for a in wait.attempts or []] == [(1, StepStatus.Pending)]
    assert "after" not in steps
    assert space.redis.zscore(space.keys.pending(), step_member(handle.run_id, "wait")) is None
    events = _events(space, handle.run_id)
    assert ("step.skipped", "wait", TIMED_OUT_REASON) in events
    assert events[-1] == ("run.completed", None, "TimedOut")
