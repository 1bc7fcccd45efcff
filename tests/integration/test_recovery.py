"""A worker killed with its work-horse mid-step: the claim lease expires and another worker re-runs it."""

from __future__ import annotations

import json
import os
import signal
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis
from redis.connection import Connection
from structlog.testing import capture_logs

from flowjobs import RunStatus, StepStatus
from flowjobs.client import RunHandle
from flowjobs.core.clock import utcnow
from flowjobs.core.handlers import default_handlers
from flowjobs.core.job_calls import JobState, step_job_id
from flowjobs.engine import Engine
from flowjobs.factory import engine_from_settings
from flowjobs.recovery import recover
from flowjobs.store import Claim, Refused
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry


def _counted(space: Space, family: str, *labels: str) -> int:
    """A cluster-wide counter (``flowjobs/core/metrics.py``) as the recovery left it, as ``/metrics``
    reads it (one field can count into several series)."""
    series = space.engine().store.metrics.read_metrics().series
    return int(sum(s.value for s in series if s.family.name == family and s.labels == labels))


def test_killed_worker_tree_step_is_rerun_after_the_lease_expires(space: Space) -> None:
    pid_key, release, done = (f"{space.token}:{name}" for name in ("pid", "release", "done"))
    definition = flow(
        "crashy",
        {
            "before": {"type": "Noop"},
            "slow": {
                "type": "Block",
                "run_after": ["before"],
                "inputs": {"pid_key": pid_key, "release": release, "done_key": done},
            },
            "after": {"type": "Noop", "run_after": ["slow"]},
        },
    )
    client = space.client(registry(definition))
    doomed = space.start_worker("doomed")
    handle = client.trigger("crashy")
    horse_pid = int(wait_until(lambda: space.redis.get(pid_key), timeout=30, what="the step to start"))
    assert horse_pid != doomed.pid

    # A container kill: the worker and its work-horse (which runs in its own process group) die at once.
    os.killpg(doomed.pid, signal.SIGKILL)
    os.kill(horse_pid, signal.SIGKILL)
    doomed.wait()
    space.start_worker("rescuer")
    space.start("scheduler")

    run = handle.wait(timeout=60)
    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(handle.run_id)
    assert detail is not None
    slow = next(s for s in detail.steps or [] if s.step_key == "slow")
    assert slow.status is StepStatus.Succeeded
    assert slow.attempt_count == 2
    first, second = slow.attempts or []
    assert first.status is StepStatus.Failed and "Claim lease expired" in (first.error_message or "")
    assert second.status is StepStatus.Succeeded and second.job_id != first.job_id
    assert json.loads(slow.output_json or "{}")["attempt"] == 2
    # At-least-once execution, recorded once: the killed attempt never finished, the second did once.
    assert [e.decode().split(":")[0] for e in space.redis.lrange(done, 0, -1)] == ["2"]
    completed = [
        e
        for e in space.engine().store.history.events(handle.run_id)
        if e.step_key == "slow" and e.type.value in ("step.completed", "step.failed")
    ]
    assert len(completed) == 1
    assert {s.step_key: s.status for s in detail.steps or []}["after"] is StepStatus.Succeeded
    assert _counted(space, "lease_expiries", "crashy", "slow") == 1
    assert _counted(space, "step_attempts", "crashy", "slow", "Failed") == 1
    assert _counted(space, "step_attempts", "crashy", "slow", "Succeeded") == 1


def test_late_completion_of_a_replaced_attempt_is_discarded(space: Space) -> None:
    definition = flow("fenced", {"a": {"type": "Noop"}})
    client = space.client(registry(definition))
    handle = client.trigger("fenced")
    engine = space.engine()
    store = engine.store
    trigger_state = store.runs.start_run(str(handle.run_id))
    assert trigger_state is not None
    engine.continue_run(str(handle.run_id), trigger_state[1])
    claimed = store.runs.claim(
        handle.run_id, "a", 1, job_id="j1", worker="w1", lease_until=utcnow() - timedelta(seconds=1)
    )
    assert isinstance(claimed, Claim)
    assert recover(engine, grace_seconds=3600) == 1  # lease already expired: attempt 2 dispatched
    late = store.runs.complete(handle.run_id, "a", 1, status=StepStatus.Succeeded, output_json='"late"')
    assert isinstance(late, Refused) and late.reason == "stale"
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    step = (run.steps or [])[0]
    assert step.attempt_count == 2 and step.output_json != '"late"'


def test_a_live_worker_keeps_its_lease_while_the_handler_runs_past_it(space: Space) -> None:
    client = space.client(registry(flow("long", {"a": {"type": "Sleep", "inputs": {"seconds": 3}}})))
    space.start_worker("patient")
    space.start("scheduler")
    run = client.trigger("long").wait(timeout=60)
    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(run.id)
    assert detail is not None
    step = (detail.steps or [])[0]
    # The lease is 2 s and the handler runs 3 s: only renewal keeps the scheduler from re-dispatching it.
    assert step.attempt_count == 1 and len(step.attempts or []) == 1


def test_a_lost_trigger_job_is_enqueued_again(space: Space) -> None:
    client = space.client(registry(flow("lost-trigger", {"a": {"type": "Noop"}})))
    handle = client.trigger("lost-trigger")
    # The trigger job vanishes (a Redis failover, a flushed queue): the run is Pending with no job.
    space.redis.delete(f"rq:job:{handle.background_job_id}", f"rq:queue:{space.settings.queue}")
    assert recover(space.engine(), grace_seconds=3600) == 0, "a young run is left alone"
    assert recover(space.engine(), grace_seconds=0) == 1
    assert _counted(space, "recoveries", "lost_trigger") == 1
    space.drain()
    assert handle.wait(timeout=5).status is RunStatus.Succeeded


def test_a_lost_continuation_is_replanned(space: Space) -> None:
    client = space.client(
        registry(
            flow(
                "lost-continuation",
                {
                    "a": {"type": "Noop"},
                    "b": {"type": "Noop", "run_after": ["a"]},
                },
            )
        )
    )
    handle = client.trigger("lost-continuation")
    engine, store, run_id = space.engine(), space.engine().store, str(handle.run_id)
    started = store.runs.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    lease = utcnow() + timedelta(seconds=30)
    assert isinstance(store.runs.claim(run_id, "a", 1, job_id="j", worker="w", lease_until=lease), Claim)
    # The worker records a's outcome and dies before planning what follows it.
    assert not isinstance(store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded), Refused)
    space.redis.delete(f"rq:queue:{space.settings.queue}")
    assert recover(engine, grace_seconds=0) == 1, "re-planned: b dispatched"
    assert _counted(space, "recoveries", "replanned") == 1
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    assert {s.step_key: s.status for s in run.steps or []} == {
        "a": StepStatus.Succeeded,
        "b": StepStatus.Succeeded,
    }


def test_no_new_attempt_once_the_run_is_closed(space: Space) -> None:
    client = space.client(registry(flow("closing", {"a": {"type": "Noop"}})))
    handle = client.trigger("closing")
    engine, store, run_id = space.engine(), space.engine().store, str(handle.run_id)
    started = store.runs.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    expired = utcnow() - timedelta(seconds=1)
    assert isinstance(store.runs.claim(run_id, "a", 1, job_id="j", worker="w", lease_until=expired), Claim)
    assert store.runs.end_run(run_id, RunStatus.TimedOut, "Run is TimedOut.") is RunStatus.TimedOut
    # The worker died with the claim: its lease expires after the run was closed.
    assert recover(engine, grace_seconds=3600) == 1
    step = store.runs.step_fields(run_id, "a")
    assert step["status"] == "Failed" and step["attempt"] == "1"
    assert "Claim lease expired" in step["error_message"]
    assert store.overdue.expired_leases(utcnow()) == [] and store.overdue.overdue_pending(utcnow()) == []
    run = client.get_run(handle.run_id)
    assert run is not None and run.status is RunStatus.TimedOut


def test_a_run_whose_manifest_is_corrupted_does_not_stop_recovery_of_the_others(space: Space) -> None:
    client = space.client(
        registry(flow("healthy", {"a": {"type": "Noop"}}), flow("corrupted", {"a": {"type": "Echo"}}))
    )
    healthy, corrupted = client.trigger("healthy"), client.trigger("corrupted")
    engine, store = space.engine(), space.engine().store
    expired = utcnow() - timedelta(seconds=1)
    for handle in (corrupted, healthy):  # the corrupted run comes first in any order of the pass
        run_id = str(handle.run_id)
        started = store.runs.start_run(run_id)
        assert started is not None
        engine.continue_run(run_id, started[1])
        # Both workers died holding their claims.
        assert isinstance(
            store.runs.claim(run_id, "a", 1, job_id="j", worker="w", lease_until=expired), Claim
        )
    bad_hash = store.history.run_fields(str(corrupted.run_id))["manifest_hash"]
    assert bad_hash != store.history.run_fields(str(healthy.run_id))["manifest_hash"]
    space.redis.set(space.keys.manifest(bad_hash), b"{not json")

    fixed = recover(space.engine(), grace_seconds=3600)  # a fresh engine: no manifest cached

    assert fixed == 2
    bad = client.get_run(corrupted.run_id)
    assert bad is not None and bad.status is RunStatus.Failed
    lost = store.runs.step_fields(str(corrupted.run_id), "a")
    assert lost["status"] == "Failed" and "Claim lease expired" in lost["error_message"]
    assert f"pinned manifest {bad_hash} is missing or unparsable" in lost["error_message"]
    assert recover(space.engine(), grace_seconds=3600) == 0, "nothing left to repair: no repeated failure"
    good = store.runs.step_fields(str(healthy.run_id), "a")
    assert good["status"] == "Pending" and good["attempt"] == "2"
    space.drain()
    assert healthy.wait(timeout=5).status is RunStatus.Succeeded
    failed = [e for e in store.history.events(corrupted.run_id) if e.type.value == "run.completed"]
    assert [e.message.split(" (")[0] for e in failed if e.message] == [
        f"Failed: Run cannot be planned: its pinned manifest {bad_hash} is missing or unparsable"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("retry", "attempts"), [(None, 3), ({"max_attempts": 4}, 4)])
def test_a_step_that_kills_its_worker_is_redispatched_only_up_to_the_lost_attempt_limit(
    space: Space, retry: dict[str, int] | None, attempts: int
) -> None:
    # A --simple worker runs the handler in its own process: KillHorse takes the whole worker down,
    # which recovery cannot tell from a node loss, so each attempt is lost (not a crash).
    space.settings = space.settings.model_copy(update={"max_lost_attempts": 2})
    poison: dict[str, object] = {"type": "KillHorse"}
    if retry is not None:
        poison["retry"] = retry
    client = space.client(
        registry(
            flow(
                "poison",
                {
                    "poison": poison,
                    "after": {"type": "Noop", "run_after": ["poison"]},
                    "other": {"type": "Noop"},
                },
            )
        )
    )
    handle = client.trigger("poison")
    workers = [space.start_worker("simple-0", simple=True)]

    def finished() -> bool:
        if workers[-1].poll() is not None:  # killed by the step: the next one (with the duties) takes over
            workers.append(space.start_worker(f"simple-{len(workers)}", simple=True))
        run = client.get_run(handle.run_id)
        return run is not None and run.status not in (RunStatus.Pending, RunStatus.Running)

    wait_until(finished, timeout=90, what="the run to end")

    run = handle.wait(timeout=5)
    assert run.status is RunStatus.Failed
    detail = client.get_run_detail(run.id)
    assert detail is not None
    steps = {s.step_key: s for s in detail.steps or []}
    step = steps["poison"]
    assert step.status is StepStatus.Failed and step.attempt_count == attempts
    assert f"worker lost {attempts} times; not re-dispatched" in (step.error_message or "")
    assert [a.status for a in step.attempts or []] == [StepStatus.Failed] * attempts
    assert all("Claim lease expired" in (a.error_message or "") for a in step.attempts or [])
    assert steps["after"].status is StepStatus.Skipped and steps["other"].status is StepStatus.Succeeded
    assert space.engine().store.runs.step_fields(str(run.id), "poison")["lost_attempts"] == str(attempts)


class CountingConnection(Connection):
    """A Redis connection counting round-trips: one send per command, or per whole pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def _idle_work(space: Space, runs: int) -> tuple[list[RunHandle], list[str]]:
    """``runs`` Pending runs (trigger job queued) and ``runs`` Running runs whose one step is
    dispatched (its job queued): a healthy backlog, nothing for recovery to repair."""
    client = space.client(registry(flow("idle", {"a": {"type": "Noop"}})))
    engine = space.engine()
    pending = [client.trigger("idle") for _ in range(runs)]
    running = []
    for _ in range(runs):
        run_id = str(client.trigger("idle").run_id)
        started = engine.store.runs.start_run(run_id)
        assert started is not None
        engine.continue_run(run_id, started[1])
        running.append(run_id)
    return pending, running


def _lose_job(space: Space, job_id: str) -> None:
    """The RQ job vanishes (a failover, a flushed queue) while flowjobs' records still name it."""
    space.redis.delete(f"rq:job:{job_id}")
    space.redis.lrem(f"rq:queue:{space.settings.queue}", 0, job_id)


def _counting_engine(space: Space) -> Engine:
    """An engine whose Redis client counts its round-trips in ``CountingConnection.sent``."""
    redis = Redis.from_url(space.settings.redis_url, connection_class=CountingConnection)
    redis.ping()  # connect now: the handshake is not part of any pass
    return engine_from_settings(space.settings, redis=redis, handlers=default_handlers)


def test_a_pass_repairs_lost_jobs_among_many_healthy_ones_with_batched_lookups(space: Space) -> None:
    runs, batch = 120, 50
    pending, running = _idle_work(space, runs)
    # The oldest of each kind, so every pass (due strictly before its own start) counts them.
    lost_trigger, lost_step = pending[0].background_job_id, step_job_id(running[0], "a", 1)
    assert lost_trigger is not None
    for job_id in (lost_trigger, lost_step):
        _lose_job(space, job_id)
    engine = _counting_engine(space)

    assert recover(engine, grace_seconds=0, batch_size=batch) == 2
    assert engine.runner.states([lost_trigger, lost_step]) == {
        lost_trigger: JobState.Enqueued,
        lost_step: JobState.Enqueued,
    }
    CountingConnection.sent = 0
    assert recover(engine, grace_seconds=0, batch_size=batch) == 0, "repaired once, healthy since"

    # 3 batches of Pending runs and 3 of dispatched steps, two look-ups each (their hashes, then
    # their jobs' states), plus the queries that list the candidates (a handful, whatever their
    # number). One look-up per candidate would take at least 2 x 240.
    batches = 2 * -(-runs // batch)
    assert CountingConnection.sent <= 2 * batches + 12, CountingConnection.sent


def test_an_unreadable_job_fails_alone_within_its_batch(space: Space) -> None:
    pending, _ = _idle_work(space, 10)
    lost, unreadable = pending[3], pending[5]
    assert lost.background_job_id is not None and unreadable.background_job_id is not None
    _lose_job(space, lost.background_job_id)
    # A key of the wrong type under the job's name: looking it up fails (WRONGTYPE), and with it
    # the batch's pipelined read.
    _lose_job(space, unreadable.background_job_id)
    space.redis.set(f"rq:job:{unreadable.background_job_id}", b"not a hash")

    with capture_logs() as logs:
        fixed = recover(space.engine(), grace_seconds=0)

    assert fixed == 1, "the lost trigger of the same batch is still repaired"
    failed = [entry for entry in logs if entry["event"] == "recovery.failed"]
    assert [(entry["run_id"], entry["step_key"]) for entry in failed] == [(str(unreadable.run_id), None)]
    assert "ResponseError" in failed[0]["error"]
    assert space.engine().runner.state(lost.background_job_id) is JobState.Enqueued
