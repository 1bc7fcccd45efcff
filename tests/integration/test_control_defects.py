"""Control actions and retention against their defects of issue 13 (section 3), on real workers
and the CLI: a retry reopens a run with a deadline and fresh lost-attempt and crash counts, a cancelled run
closes when its last running step ends its attempt, and a purge leaves nothing behind."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flowjobs import FlowClient, RunStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.job_calls import JobState
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry
from tests.integration.test_retention import _age, _job_ids, _rq_keys, _traces


def _step(client: FlowClient, run_id: object, step_key: str) -> dict[str, str]:
    return client.store.runs.step_fields(str(run_id), step_key)


def _closes(client: FlowClient, run_id: object) -> list[str | None]:
    return [e.message for e in client.store.history.events(str(run_id)) if e.type.value == "run.completed"]


def test_a_run_retried_before_its_deadline_keeps_that_deadline(space: Space) -> None:
    block: dict[str, Any] = {k: f"{space.token}:{k}" for k in ("pid_key", "release", "done_key")}
    block["timeout"] = 300
    steps = {
        "a": {"type": "Flaky", "inputs": {"key": f"{space.token}:flaky", "succeed_on": 2}},
        "b": {"type": "Block", "inputs": block, "run_after": ["a"]},
    }
    client = space.client(registry(flow("deadline", steps), flow("warm", {"a": {"type": "Noop"}})))
    space.start_worker("w")
    # Once the worker runs, the retry comes well before the deadline.
    assert client.trigger("warm").wait(timeout=60).status is RunStatus.Succeeded
    handle = client.trigger("deadline", data={"runTimeoutSeconds": 8})
    failed = handle.wait(timeout=30)
    assert failed.status is RunStatus.Failed and failed.timeout_at is not None

    client.retry_step(handle.run_id, "a")
    try:
        # b blocks (until released, at most 300 s): only the run's deadline ends the run.
        run = handle.wait(timeout=90)
    finally:
        space.redis.set(block["release"], "1", ex=60)
    assert run.status is RunStatus.TimedOut and run.timed_out_at is not None
    assert run.timeout_at == failed.timeout_at  # still ahead at the retry: kept, not extended
    assert _closes(client, handle.run_id) == ["Failed", "TimedOut"]


def test_a_run_retried_after_it_timed_out_gets_a_fresh_window_and_times_out_again(space: Space) -> None:
    steps = {"a": {"type": "Sleep", "inputs": {"seconds": 60}, "timeout_seconds": 6}}
    client = space.client(registry(flow("window", steps)))
    # Booted first: on a loaded machine a booting worker let the 3 s window pass before step a started.
    space.start_ready_worker("w")
    handle = client.trigger("window", data={"runTimeoutSeconds": 3})
    first = handle.wait(timeout=30)
    assert first.status is RunStatus.TimedOut and first.timeout_at is not None
    # The step outlives the run's deadline, then fails on its own timeout.
    wait_until(lambda: _step(client, handle.run_id, "a")["status"] == "Failed", 30, "step a to fail")

    retried = space.cli("runs", "retry-step", str(handle.run_id), "a")
    assert retried.returncode == 0, retried.stderr
    started = utcnow()
    reopened = handle.record()
    assert reopened.status is RunStatus.Running and reopened.timed_out_at is None
    assert reopened.timeout_at is not None and reopened.timeout_at > first.timeout_at

    run = handle.wait(timeout=30)
    assert run.status is RunStatus.TimedOut  # without a deadline: Failed once attempt 2 timed out
    assert run.timeout_at is not None and (run.timeout_at - started).total_seconds() <= 3
    assert _closes(client, handle.run_id) == ["TimedOut", "TimedOut"]


@pytest.mark.slow
def test_a_retried_step_gets_the_crash_allowance_again(space: Space) -> None:
    # KillHorse kills the work-horse on every attempt: each attempt is a crash, and the default
    # limit (FLOWJOBS_MAX_STEP_CRASHES=3) fails the step at the third, whatever its retry allows.
    poison = {"type": "KillHorse", "retry": {"max_attempts": 10}}
    client = space.client(registry(flow("poison", {"poison": poison})))
    space.start_worker("forking")
    handle = client.trigger("poison")
    assert handle.wait(timeout=90).status is RunStatus.Failed
    assert _step(client, handle.run_id, "poison")["attempt"] == "3"

    client.retry_step(handle.run_id, "poison")
    run = handle.wait(timeout=90)
    assert run.status is RunStatus.Failed
    step = _step(client, handle.run_id, "poison")
    # Without the reset (as lost_attempts once was): attempt 4 failed at once as "4 times".
    assert step["attempt"] == "6", step
    assert step["error_message"].endswith("crashed its work-horse 3 times; not retried.")


@pytest.mark.parametrize("kind", ["poll", "retry"])
def test_a_cancelled_run_closes_when_its_last_running_step_ends_its_attempt(space: Space, kind: str) -> None:
    slow: dict[str, Any] = {
        # Polls until its output says what it never says: the next poll is dropped as cancelled.
        "poll": {
            "type": "AwaitCancel",
            "inputs": {"started": f"{space.token}:started", "timeout": 30},
            "poll": {"interval_seconds": 1, "condition_path": "saw_cancel", "condition_equals": "never"},
        },
        # Fails on its step timeout: its retry is dropped as cancelled.
        "retry": {
            "type": "Sleep",
            "inputs": {"seconds": 30},
            "timeout_seconds": 3,
            "retry": {"max_attempts": 3},
        },
    }[kind]
    steps = {"slow": slow, "next": {"type": "Noop", "run_after": ["slow"]}}
    client = space.client(registry(flow("cancelled", steps)))
    handle = client.trigger("cancelled")

    def cancel_while_running() -> None:
        running = lambda: _step(client, handle.run_id, "slow").get("status") == "Running"  # noqa: E731
        wait_until(running, 30, "the step to run")
        client.cancel(handle.run_id, "operator")

    # The step runs in this process (space.drain), the cancel comes from another thread. drain runs
    # no recovery duty: only the end of the step's attempt can close the run.
    canceller = threading.Thread(target=cancel_while_running)
    canceller.start()
    space.drain()
    canceller.join()
    run = handle.record()
    assert run.status is RunStatus.Cancelled, run
    assert _closes(client, handle.run_id) == ["Cancelled"]
    slow_step = _step(client, handle.run_id, "slow")
    assert slow_step["status"] in ("Skipped", "Failed") and slow_step["attempt"] == "1"


def test_a_purge_deletes_the_re_run_index_of_the_run_and_its_entry_in_its_sources(space: Space) -> None:
    client = space.client(registry(flow("one", {"a": {"type": "Noop"}})))
    source = str(client.trigger("one").run_id)
    space.drain()
    derived = str(client.rerun(source).run_id)
    space.drain()
    assert client.store.runs.derived_run_ids(source) == [derived]
    _age(space, source, days=10)
    _age(space, derived, days=10)

    purged = space.cli("runs", "purge", "--older-than", "7", "--json")
    assert purged.returncode == 0, purged.stderr
    assert client.get_run(source) is None and client.get_run(derived) is None
    assert _traces(space, source) == [] and _traces(space, derived) == []


def test_a_timed_out_run_is_purged_only_once_its_running_step_ended(space: Space) -> None:
    block = {k: f"{space.token}:{k}" for k in ("pid_key", "release", "done_key")}
    client = space.client(registry(flow("outlived", {"a": {"type": "Block", "inputs": block}})))
    space.start_worker("w")
    # The deadline leaves a loaded machine time to start the run and claim its step before it.
    handle = client.trigger("outlived", data={"runTimeoutSeconds": 3})
    run_id = str(handle.run_id)
    wait_until(lambda: _step(client, run_id, "a").get("status") == "Running", 30, "the step to run")
    assert handle.wait(timeout=30).status is RunStatus.TimedOut
    assert _step(client, run_id, "a")["status"] == "Running"  # Block waits for its release
    _age(space, run_id, days=10)

    kept = space.cli("runs", "purge", "--older-than", "7")
    assert kept.returncode == 0 and kept.stdout.strip() == "0 run(s) deleted", kept
    assert client.get_run(run_id) is not None
    jobs = _job_ids(space, run_id)

    space.redis.set(block["release"], "1", ex=60)
    wait_until(lambda: space.redis.lrange(block["done_key"], 0, -1), 30, "the step to end")
    job_id = _step(client, run_id, "a")["job_id"]
    ended = (JobState.Succeeded, JobState.Failed)
    wait_until(lambda: client.runner.state(job_id) in ended, 30, "the step's job to end in RQ")
    purged = space.cli("runs", "purge", "--older-than", "7")
    assert purged.returncode == 0 and purged.stdout.strip() == "1 run(s) deleted", purged
    assert _traces(space, run_id) == [] and _rq_keys(space, jobs) == []


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "1e12", "3651"])
def test_a_purge_refuses_an_age_that_is_not_a_finite_number_of_days_with_one_line(
    space: Space, days: str
) -> None:
    refused = space.cli("runs", "purge", "--older-than", days)
    assert refused.returncode == 2, refused
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--older-than" in errors[0], refused.stderr
