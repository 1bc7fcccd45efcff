"""Duties in every worker: recovery without a scheduler process, once per period across processes."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from datetime import datetime

import pytest

from flowjobs import RunStatus, StepStatus
from flowjobs.core.clock import utcnow
from flowjobs.duties import Duties, Duty
from flowjobs.settings import Settings
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry

#: The README's bound: with default settings, a SIGKILLed worker's step is re-dispatched within this.
REDISPATCH_BUDGET_SECONDS = 20.0


def test_each_duty_runs_once_per_period_however_many_processes_run_the_duties(space: Space) -> None:
    calls: list[str] = []

    def duty(name: str) -> Duty:
        return Duty(name, 60.0, lambda: calls.append(name) or 1)

    def broken() -> int:
        raise ValueError("a bad duty")

    processes = [
        Duties(space.redis, space.keys, [duty("a"), Duty("broken", 60.0, broken), duty("b")], owner=f"p{i}")
        for i in range(3)
    ]
    passes = [p.run_due() for p in processes for _ in range(2)]

    # Each duty ran once in all (the first process took every lock), and the one that raised did
    # not stop the one after it.
    assert sorted(calls) == ["a", "b"]
    assert passes[0] == {"a": 1, "b": 1} and all(p == {} for p in passes[1:])
    assert space.redis.get(space.keys.duty_lock("a")) == b"p0"
    assert 0 < space.redis.pttl(space.keys.duty_lock("a")) <= 60_000
    assert processes[1].run_due(force=True) == {"a": 1, "b": 1}


def test_a_duty_lock_goes_to_the_process_waiting_for_it_and_stays_with_a_lone_one(space: Space) -> None:
    def process(name: str) -> Duties:
        return Duties(space.redis, space.keys, [Duty("d", 0.2, lambda: 1)], owner=name)

    a, b = process("a"), process("b")
    lock = space.keys.duty_lock("d")

    def period_over() -> bool:
        return not space.redis.exists(lock)

    assert a.run_due() == {"d": 1}
    assert b.run_due() == {}  # held by a: b now waits for it
    wait_until(period_over, timeout=5, what="a's period to end")
    assert a.run_due() == {}, "a ran it last and b is waiting: a leaves it to b"
    assert b.run_due() == {"d": 1}
    wait_until(period_over, timeout=5, what="b's period to end")
    assert b.run_due() == {"d": 1}, "nobody waits: b takes it again"

    assert a.run_due() == {}  # a waits again, then is gone
    wait_until(period_over, timeout=5, what="b's period to end")
    assert b.run_due() == {}
    # A waiting claim lasts a period and two passes: a gone waiter holds the duty up that long.
    wait_until(lambda: b.run_due() == {"d": 1}, timeout=5, what="b to take it back from the gone waiter")
    assert space.redis.get(lock) == b"b"


@pytest.mark.slow
def test_a_sigkilled_workers_step_is_redispatched_within_20s_by_workers_alone(space: Space) -> None:
    # Default lease and duty period (not the fixture's short ones), and no scheduler process.
    defaults = Settings.model_fields
    production = replace(
        space,
        settings=space.settings.model_copy(
            update={
                "claim_lease_seconds": defaults["claim_lease_seconds"].default,
                "recovery_interval_seconds": defaults["recovery_interval_seconds"].default,
            }
        ),
        processes=space.processes,  # the fixture stops what this test starts
    )
    assert production.settings.claim_lease_seconds <= 10
    pid_key, release, done = (f"{space.token}:{name}" for name in ("pid", "release", "done"))
    definition = flow(
        "killed",
        {
            "stuck": {
                "type": "Block",
                "inputs": {"pid_key": pid_key, "release": release, "done_key": done, "timeout": 600},
            },
            "after": {"type": "Noop", "run_after": ["stuck"]},
        },
    )
    client = production.client(registry(definition))
    doomed = production.start_worker("doomed")
    handle = client.trigger("killed")
    horse_pid = int(wait_until(lambda: space.redis.get(pid_key), timeout=60, what="the step to start"))

    os.killpg(doomed.pid, signal.SIGKILL)  # the worker (and RQ's scheduler process) ...
    os.kill(horse_pid, signal.SIGKILL)  # ... and its work-horse, in its own process group
    killed_at, killed = utcnow(), time.monotonic()
    doomed.wait()
    production.start_worker("rescuer")

    store = production.engine().store
    wait_until(
        lambda: store.runs.step_fields(str(handle.run_id), "stuck").get("attempt") == "2",
        timeout=REDISPATCH_BUDGET_SECONDS + 5,
        what="the second attempt to be dispatched",
    )
    dispatched_after = time.monotonic() - killed
    run = handle.wait(timeout=60)

    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(handle.run_id)
    assert detail is not None
    stuck = next(s for s in detail.steps or [] if s.step_key == "stuck")
    first, second = stuck.attempts or []
    assert first.status is StepStatus.Failed and "Claim lease expired" in (first.error_message or "")
    assert second.status is StepStatus.Succeeded and second.started_at is not None
    claimed_after = (second.started_at - killed_at).total_seconds()
    print(f"re-dispatched {dispatched_after:.1f}s and claimed {claimed_after:.1f}s after the kill")
    assert dispatched_after <= REDISPATCH_BUDGET_SECONDS
    assert claimed_after <= REDISPATCH_BUDGET_SECONDS
    assert isinstance(second.started_at, datetime)
