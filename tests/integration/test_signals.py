"""WaitForSignal on real workers: parks without a worker, resumes on signal, times out, keeps early ones."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from flowjobs import FlowClient, RunStatus, SignalAlreadyDelivered, SignalNotFound, StepStatus
from flowjobs.core.clock import utcnow
from flowjobs.core.job_calls import JobCall
from flowjobs.recovery import recover
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.store import Claim, NextAttempt, Park, RunSnapshot, Signalled
from flowjobs.store.schedules import ScheduleStore
from tests.conftest import Space, wait_until
from tests.integration.flows import flow, registry

APPROVAL = {
    "prepare": {"type": "Noop"},
    "approval": {
        "type": "WaitForSignal",
        "run_after": ["prepare"],
        "inputs": {"signalName": "approved", "timeoutSeconds": 60},
    },
    "ship": {"type": "Echo", "run_after": ["approval"], "inputs": {"by": "@steps('approval').output.by"}},
}


def _step(space: Space, run_id: object, key: str) -> dict[str, str]:
    return space.engine().store.runs.step_fields(str(run_id), key)


def test_parked_step_resumes_at_once_with_the_payload(space: Space) -> None:
    client = space.client(registry(flow("approval", APPROVAL)))
    worker = space.start_worker("solo", simple=True)
    handle = client.trigger("approval")
    wait_until(lambda: _step(space, handle.run_id, "approval").get("attempt") == "2", what="the step to park")
    parked = _step(space, handle.run_id, "approval")
    assert parked["status"] == "Pending"
    waiters = (space.engine().store.signals.signal_record(handle.run_id, "approved") or {})["waiters"]
    assert waiters["approval"]["attempt"] == 2 and waiters["approval"]["expires_at"]
    # Parked means no worker holds it: the only worker is idle and takes the next run at once.
    assert client.trigger("approval").run_id
    assert worker.poll() is None

    assert client.signal(handle.run_id, "approved", {"by": "ada"}) == "resumed"
    run = handle.wait(timeout=30)
    assert run.status is RunStatus.Succeeded
    detail = client.get_run_detail(handle.run_id)
    assert detail is not None
    approval = next(s for s in detail.steps or [] if s.step_key == "approval")
    assert json.loads(approval.output_json or "null") == {"by": "ada"}
    assert [a.status for a in approval.attempts or []] == [StepStatus.Pending, StepStatus.Succeeded]
    ship = next(s for s in detail.steps or [] if s.step_key == "ship")
    assert json.loads(ship.output_json or "{}")["inputs"] == {"by": "ada"}
    record = space.engine().store.signals.signal_record(handle.run_id, "approved")
    assert record is not None and record["waiters"] == waiters and record["delivered_at"]
    assert json.loads(record["payload_json"]) == {"by": "ada"}

    with pytest.raises(SignalAlreadyDelivered):
        client.signal(handle.run_id, "approved", {"by": "bob"})


def test_unknown_run_or_signal_name_is_signal_not_found(space: Space) -> None:
    client = space.client(registry(flow("approval", APPROVAL)))
    handle = client.trigger("approval")
    with pytest.raises(SignalNotFound):
        client.signal("00000000-0000-4000-8000-000000000000", "approved")
    with pytest.raises(SignalNotFound):
        client.signal(handle.run_id, "rejected")
    assert space.engine().store.signals.signal_record(handle.run_id, "rejected") is None


def test_signal_sent_before_the_step_parks_is_kept_and_consumed(space: Space) -> None:
    client = space.client(registry(flow("approval", APPROVAL)))
    handle = client.trigger("approval")
    # Nothing has run yet: the run is Pending and the step has no record.
    assert client.signal(handle.run_id, "approved", {"by": "early"}) == "kept"
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    approval = next(s for s in run.steps or [] if s.step_key == "approval")
    assert json.loads(approval.output_json or "null") == {"by": "early"}
    assert approval.attempt_count == 1, "an early signal is consumed without parking"


def test_signal_racing_the_park_is_never_lost(space: Space) -> None:
    """The step is claimed (Running, about to park) when the signal arrives: the park sees it."""
    client = space.client(registry(flow("approval", APPROVAL)))
    handle = client.trigger("approval")
    engine, store, run_id = space.engine(), space.engine().store, str(handle.run_id)
    started = store.runs.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    lease = utcnow() + timedelta(seconds=30)
    assert isinstance(
        store.runs.claim(run_id, "prepare", 1, job_id="j1", worker="test", lease_until=lease), Claim
    )
    done = store.runs.complete(run_id, "prepare", 1, status=StepStatus.Succeeded)
    assert isinstance(done, RunSnapshot)
    engine.continue_run(run_id, done)
    assert isinstance(
        store.runs.claim(run_id, "approval", 1, job_id="j2", worker="test", lease_until=lease), Claim
    )

    assert client.signal(handle.run_id, "approved", {"by": "racer"}) == "kept"
    parked = store.runs.complete(
        run_id,
        "approval",
        1,
        status=StepStatus.Pending,
        next_attempt=NextAttempt(2, "j3", utcnow()),
        park=Park("approved", None),
    )
    assert isinstance(parked, Signalled) and json.loads(parked.payload_json) == {"by": "racer"}
    assert store.runs.step_fields(run_id, "approval")["status"] == "Running", "nothing was parked"


def test_signal_timeout_fails_the_step(space: Space) -> None:
    steps = {
        **APPROVAL,
        "approval": {**APPROVAL["approval"], "inputs": {"signalName": "approved", "timeoutSeconds": 1}},
    }
    client = space.client(registry(flow("approval", steps)))
    space.start_worker("solo", simple=True)
    run = client.trigger("approval").wait(timeout=30)
    assert run.status is RunStatus.Failed
    detail = client.get_run_detail(run.id)
    assert detail is not None
    approval = next(s for s in detail.steps or [] if s.step_key == "approval")
    assert approval.status is StepStatus.Failed
    assert approval.error_message == "Signal 'approved' was not received within 1s."
    with pytest.raises(SignalNotFound):
        client.signal(run.id, "approved")


def test_cli_signal(space: Space) -> None:
    client = space.client(registry(flow("approval", APPROVAL)))
    handle = client.trigger("approval")

    sent = space.cli("runs", "signal", str(handle.run_id), "approved", "--data", '{"by": "cli"}')
    assert sent.returncode == 0 and "kept" in sent.stdout, sent.stderr
    again = space.cli("runs", "signal", str(handle.run_id), "approved")
    assert again.returncode == 2 and "already delivered" in again.stderr
    unknown = space.cli("runs", "signal", str(handle.run_id), "nope")
    assert unknown.returncode == 2 and "waits for signal 'nope'" in unknown.stderr
    bad = space.cli("runs", "signal", str(handle.run_id), "approved", "--data", "{oops")
    assert bad.returncode == 2 and "not JSON" in bad.stderr


MANY_WAITERS = {
    "loop": {
        "type": "ForEach",
        "for_each": [1, 2, 3],
        "steps": {"wait": {"type": "WaitForSignal", "inputs": {"signalName": "go"}}},
    },
    "first": {"type": "WaitForSignal", "inputs": {"signalName": "go"}},
    "second": {"type": "WaitForSignal", "inputs": {"signalName": "go"}},
}


def test_one_delivery_resumes_every_step_parked_on_the_name(space: Space) -> None:
    client = space.client(registry(flow("many", MANY_WAITERS)))
    handle = client.trigger("many")
    space.drain()
    waiting = ["loop.0.wait", "loop.1.wait", "loop.2.wait", "first", "second"]
    store = space.engine().store
    assert sorted(store.signals.signal_waiters(handle.run_id, "go")) == sorted(waiting)

    assert client.signal(handle.run_id, "go", {"ok": True}) == "resumed"
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    steps = {s.step_key: s for s in run.steps or []}
    for key in waiting:
        assert steps[key].status is StepStatus.Succeeded, key
        assert json.loads(steps[key].output_json or "null") == {"ok": True}
    with pytest.raises(SignalAlreadyDelivered):
        client.signal(handle.run_id, "go")


def test_signal_name_from_an_expression_is_signalled_by_its_resolved_name(space: Space) -> None:
    steps = {"wait": {"type": "WaitForSignal", "inputs": {"signalName": "@triggerBody()?.sig"}}}
    client = space.client(registry(flow("dynamic", steps)))
    handle = client.trigger("dynamic", data={"sig": "order-42-paid"})
    space.drain()
    assert space.engine().store.signals.signal_waiters(handle.run_id, "order-42-paid") == {"wait": 2}

    assert client.signal(handle.run_id, "order-42-paid", "paid") == "resumed"
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    assert json.loads((run.steps or [])[0].output_json or "null") == "paid"


DYNAMIC = {
    "wait": {"type": "WaitForSignal", "inputs": {"signalName": "@triggerBody()?.sig"}},
    "after": {"type": "Noop", "run_after": ["wait"]},
}


@pytest.mark.parametrize(
    ("data", "shown"),
    [({}, "null"), ({"sig": {"a": 1}}, '{"a": 1}'), ({"sig": ""}, '""'), ({"sig": 42}, "42")],
)
def test_an_expression_name_that_is_not_a_non_empty_string_fails_the_step(
    space: Space, data: dict[str, object], shown: str
) -> None:
    client = space.client(registry(flow("dynamic", DYNAMIC)))
    handle = client.trigger("dynamic", data=data)
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Failed, "the step parked under a made-up name"
    wait = next(s for s in run.steps or [] if s.step_key == "wait")
    assert wait.status is StepStatus.Failed
    assert wait.error_message == f"signalName resolved to {shown}; a signal name must be a non-empty string."
    assert space.redis.hgetall(space.keys.signals(handle.run_id)) == {}, "a signal record was written"


def test_a_name_no_step_can_consume_is_refused_once_every_expression_name_is_known(space: Space) -> None:
    client = space.client(registry(flow("dynamic", DYNAMIC)))
    handle = client.trigger("dynamic", data={"sig": "approve-42"})
    # The step has not run: its name is not known yet, so any name is kept for it.
    assert client.signal(handle.run_id, "maybe", {"early": True}) == "kept"
    space.drain()
    assert space.engine().store.signals.signal_waiters(handle.run_id, "approve-42") == {"wait": 2}

    typo = space.cli("runs", "signal", str(handle.run_id), "typo")
    assert typo.returncode == 2 and "waits for signal 'typo'" in typo.stderr, (typo.stdout, typo.stderr)
    with pytest.raises(SignalNotFound):
        client.signal(handle.run_id, "approve-43")
    assert space.engine().store.signals.signal_record(handle.run_id, "typo") is None
    assert space.engine().store.signals.signal_record(handle.run_id, "approve-43") is None

    sent = space.cli("runs", "signal", str(handle.run_id), "approve-42", "--data", '{"by": "cli"}')
    assert sent.returncode == 0 and "resumed" in sent.stdout, sent.stderr
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded


def test_a_name_is_kept_while_a_foreach_may_still_park_under_an_expression_name(space: Space) -> None:
    steps = {
        "gate": {"type": "WaitForSignal", "inputs": {"signalName": "open"}},
        "loop": {
            "type": "ForEach",
            "run_after": ["gate"],
            "for_each": ["item-1", "item-2"],
            "steps": {
                "name": {"type": "Echo"},
                "wait": {
                    "type": "WaitForSignal",
                    "run_after": ["name"],
                    "inputs": {"signalName": "@steps('name').output.inputs.__loopItem"},
                },
            },
        },
    }
    client = space.client(registry(flow("loop-names", steps)))
    handle = client.trigger("loop-names")
    space.drain()
    # "gate" is parked, the loop's children have not run: their names are not known yet.
    assert client.signal(handle.run_id, "item-2", "two") == "kept"
    assert client.signal(handle.run_id, "open") == "resumed"
    space.drain()
    store = space.engine().store
    assert store.signals.signal_waiters(handle.run_id, "item-1") == {"loop.0.wait": 2}
    # Every child parked or ended: a name none of them resolved to is refused, a literal one is known.
    with pytest.raises(SignalNotFound):
        client.signal(handle.run_id, "item-3")
    assert client.signal(handle.run_id, "item-1", "one") == "resumed"
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
    outputs = {s.step_key: json.loads(s.output_json or "null") for s in run.steps or []}
    assert outputs["loop.0.wait"] == "one" and outputs["loop.1.wait"] == "two"


class _EnqueueFails(RQJobRunner):
    """A runner whose direct enqueue always loses its connection (the script path still works)."""

    def enqueue(self, call: JobCall) -> str:
        raise RedisConnectionError("connection lost")


def test_delivery_and_resume_job_are_written_together(space: Space) -> None:
    definition = flow("approval", APPROVAL)
    client = space.client(registry(definition))
    handle = client.trigger("approval")
    space.drain()
    assert _step(space, handle.run_id, "approval")["status"] == "Pending"

    fragile = FlowClient(
        space.redis,
        registry(definition),
        space.settings.queue,
        key_prefix=space.settings.key_prefix,
        runner=_EnqueueFails(
            space.redis,
            space.settings.queue,
            keep_seconds=space.settings.rq_job_ttl_seconds,
            default_timeout_seconds=space.settings.job_timeout_seconds,
            schedules=ScheduleStore(space.redis, space.keys),
        ),
    )
    # Before delivery and resume were one script, the resume enqueue could fail after the signal
    # was recorded, leaving the step parked forever.
    assert fragile.signal(handle.run_id, "approved", {"by": "ada"}) == "resumed"
    space.drain()
    assert client.get_run(handle.run_id).status is RunStatus.Succeeded  # type: ignore[union-attr]


def test_recovery_requeues_a_resume_job_that_was_lost(space: Space) -> None:
    client = space.client(registry(flow("approval", APPROVAL)))
    handle = client.trigger("approval")
    space.drain()
    assert client.signal(handle.run_id, "approved", {"by": "ada"}) == "resumed"
    # The resume job vanishes (a queue flushed by hand, a failover without persistence).
    job_id = _step(space, handle.run_id, "approval")["job_id"]
    space.redis.delete(f"rq:job:{job_id}")
    space.redis.lrem(f"rq:queue:{space.settings.queue}", 0, job_id)

    engine = space.engine()
    wait_until(lambda: recover(engine, grace_seconds=0) >= 1, timeout=10, what="recovery to re-queue it")
    space.drain()
    run = client.get_run_detail(handle.run_id)
    assert run is not None and run.status is RunStatus.Succeeded
