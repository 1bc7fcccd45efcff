"""WaitForSignal on real workers: parks without a worker, resumes on signal, times out, keeps early ones."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from flowjobs import RunStatus, SignalAlreadyDelivered, SignalNotFound, StepStatus
from flowjobs.clock import utcnow
from flowjobs.store import Claim, Completion, NextAttempt, Park, Signalled
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
    return space.engine().store.step_fields(str(run_id), key)


def test_parked_step_resumes_at_once_with_the_payload(space: Space) -> None:
    client = space.client(registry(flow("approval", APPROVAL)))
    worker = space.start_worker("solo", simple=True)
    handle = client.trigger("approval")
    wait_until(lambda: _step(space, handle.run_id, "approval").get("attempt") == "2", what="the step to park")
    parked = _step(space, handle.run_id, "approval")
    assert parked["status"] == "Pending"
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
    record = space.engine().store.signal_record(handle.run_id, "approved")
    assert record is not None and record["step_key"] == "approval" and record["delivered_at"]
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
    assert space.engine().store.signal_record(handle.run_id, "rejected") is None


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
    started = store.start_run(run_id)
    assert started is not None
    engine.continue_run(run_id, started[1])
    lease = utcnow() + timedelta(seconds=30)
    assert isinstance(store.claim(run_id, "prepare", 1, job_id="j1", worker="test", lease_until=lease), Claim)
    done = store.complete(run_id, "prepare", 1, status=StepStatus.Succeeded)
    assert isinstance(done, Completion)
    engine.continue_run(run_id, done)
    assert isinstance(
        store.claim(run_id, "approval", 1, job_id="j2", worker="test", lease_until=lease), Claim
    )

    assert client.signal(handle.run_id, "approved", {"by": "racer"}) == "kept"
    parked = store.complete(
        run_id,
        "approval",
        1,
        status=StepStatus.Pending,
        next_attempt=NextAttempt(2, "j3", utcnow()),
        park=Park("approved", None),
    )
    assert isinstance(parked, Signalled) and json.loads(parked.payload_json) == {"by": "racer"}
    assert store.step_fields(run_id, "approval")["status"] == "Running", "nothing was parked"


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
