"""Every refusal (and every other reply) of every Lua script, through ``RunStore`` on a real Redis."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from flowjobs.core.clock import utcnow
from flowjobs.core.planner import LoopProgress
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.factory import store_from_settings
from flowjobs.store import (
    AppliedPlan,
    Claim,
    ClaimRefusal,
    Continuation,
    Delivered,
    FenceRefusal,
    NextAttempt,
    Park,
    Refused,
    RunSnapshot,
    RunStore,
    Signalled,
    SignalRefusal,
    SignalResume,
    StepDispatch,
)
from flowjobs.store.codec import STEPS_VERSION_FIELD
from tests.conftest import Space
from tests.integration.flows import flow, registry

STEPS: dict[str, dict[str, Any]] = {
    "a": {"type": "Noop"},
    "b": {"type": "Echo", "run_after": ["a"], "inputs": {"from_a": "@steps('a').output"}},
    "wait": {"type": "WaitForSignal", "inputs": {"signalName": "go"}},
}
NO_RUN = "00000000-0000-4000-8000-000000000000"
LATER = timedelta(seconds=30)


def _store(space: Space) -> RunStore:
    return store_from_settings(space.settings, space.redis)


def _pending_run(space: Space) -> str:
    """A triggered run, still Pending (its trigger job is queued and never executed here)."""
    return str(space.client(registry(flow("scripts", STEPS))).trigger("scripts").run_id)


def _running_run(space: Space, *dispatch: str) -> str:
    """A Running run with ``dispatch`` dispatched as their first attempt (records only, no jobs)."""
    store = _store(space)
    run_id = _pending_run(space)
    assert store.runs.start_run(run_id) is not None
    steps = [StepDispatch(key, STEPS[key]["type"], 1, f"job-{key}-1") for key in dispatch]
    assert store.runs.apply_plan(run_id, Continuation(dispatch=steps)).dispatched == list(dispatch)
    return run_id


def _claim(store: RunStore, run_id: str, step_key: str, attempt: int = 1, lease: timedelta = LATER) -> Claim:
    claim = store.runs.claim(
        run_id,
        step_key,
        attempt,
        job_id=f"job-{step_key}-{attempt}",
        worker="w",
        lease_until=utcnow() + lease,
    )
    assert isinstance(claim, Claim), claim
    return claim


def _park(store: RunStore, run_id: str, name: str = "go") -> RunSnapshot | Refused[FenceRefusal] | Signalled:
    """Claim the WaitForSignal step and park it on ``name`` (attempt 2 resumes it)."""
    _claim(store, run_id, "wait")
    return store.runs.complete(
        run_id,
        "wait",
        1,
        status=StepStatus.Pending,
        next_attempt=NextAttempt(2, "job-wait-2", utcnow() + LATER, "step.pending"),
        park=Park(name, None),
    )


# -- start_run, apply_plan, end_run, run_detail ------------------------------------------------


def test_start_run_moves_a_pending_run_once_and_finds_no_missing_run(space: Space) -> None:
    store = _store(space)
    run_id = _pending_run(space)
    first = store.runs.start_run(run_id)
    assert first is not None
    before, snapshot = first
    assert before is RunStatus.Pending and snapshot.run["status"] == "Running"
    assert snapshot.statuses == {} and snapshot.loops == {}
    again = store.runs.start_run(run_id)
    assert again is not None and again[0] is RunStatus.Running
    assert store.runs.start_run(NO_RUN) is None


def test_start_run_answers_the_snapshot_a_read_after_it_gets(space: Space) -> None:
    # start_run reads the run hash once, before its writes, and answers it as written.
    store = _store(space)
    run_id = _pending_run(space)
    trace = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "tracestate": "k=v"}
    started = store.runs.start_run(run_id, trace)
    assert started is not None and started[1].run["traceparent"] == trace["traceparent"]
    assert started[1] == store.runs.run_state(run_id)
    # A run refused at its start (its flow disabled meanwhile) answers its closed state too.
    client = space.client(registry(flow("gated", STEPS)))
    refused = str(client.trigger("gated").run_id)
    client.set_flow_enabled("gated", False)
    closed = store.runs.start_run(refused)
    assert closed is not None and closed[0] is RunStatus.Pending
    assert closed[1].run["status"] == "Cancelled" and closed[1] == store.runs.run_state(refused)


def test_apply_plan_writes_nothing_on_a_run_that_is_not_running(space: Space) -> None:
    store = _store(space)
    run_id = _pending_run(space)
    plan = Continuation(dispatch=[StepDispatch("a", "Noop", 1, "job-a-1")])
    assert store.runs.apply_plan(run_id, plan) == AppliedPlan([], None, RunStatus.Pending)
    assert store.runs.step_fields(run_id, "a") == {}
    assert store.runs.apply_plan(NO_RUN, plan) == AppliedPlan([], None, None)


def test_apply_plan_dispatches_once_and_closes_when_every_step_is_final(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    again = store.runs.apply_plan(run_id, Continuation(dispatch=[StepDispatch("a", "Noop", 1, "job-a-1")]))
    assert again == AppliedPlan([], None, RunStatus.Running), "the dispatch ledger keeps one record"
    _claim(store, run_id, "a")
    assert isinstance(store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded), RunSnapshot)
    closing = Continuation(close=RunStatus.Succeeded, required=["a"])
    assert store.runs.apply_plan(run_id, closing) == AppliedPlan([], RunStatus.Succeeded, RunStatus.Succeeded)


def test_end_run_closes_an_active_run_once(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    assert store.runs.end_run(run_id, RunStatus.TimedOut, "Run is TimedOut.") is RunStatus.TimedOut
    assert store.runs.step_fields(run_id, "a")["status"] == "Skipped"
    assert store.runs.end_run(run_id, RunStatus.Failed, "again") is None
    assert store.runs.end_run(NO_RUN, RunStatus.Failed, "none") is None
    run = store.history.get_run(run_id)
    assert run is not None and run.status is RunStatus.TimedOut


def test_run_detail_of_a_missing_run_is_none(space: Space) -> None:
    store = _store(space)
    assert store.history.get_run_detail(NO_RUN) is None
    run_id = _running_run(space, "a")
    detail = store.history.get_run_detail(run_id)
    assert detail is not None and [s.step_key for s in detail.steps or []] == ["a"]


# -- claim -------------------------------------------------------------------------------------


def test_claim_is_refused_on_a_run_that_is_not_running(space: Space) -> None:
    store = _store(space)
    run_id = _pending_run(space)
    lease = utcnow() + LATER
    assert store.runs.claim(run_id, "a", 1, job_id="j", worker="w", lease_until=lease) == Refused(
        ClaimRefusal.run_not_running, "Pending"
    )
    assert store.runs.claim(NO_RUN, "a", 1, job_id="j", worker="w", lease_until=lease) == Refused(
        ClaimRefusal.run_not_running, "missing"
    )


def test_claim_is_refused_for_a_stale_attempt_or_a_step_not_pending(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    lease = utcnow() + LATER
    assert store.runs.claim(run_id, "a", 2, job_id="j", worker="w", lease_until=lease) == Refused(
        ClaimRefusal.stale, "Pending#1"
    )
    assert store.runs.claim(run_id, "b", 1, job_id="j", worker="w", lease_until=lease) == Refused(
        ClaimRefusal.stale, "missing#?"
    )
    _claim(store, run_id, "a")
    assert store.runs.claim(run_id, "a", 1, job_id="j", worker="w2", lease_until=lease) == Refused(
        ClaimRefusal.stale, "Running#1"
    )


def test_a_granted_claim_carries_the_run_its_references_and_the_snapshot(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    _claim(store, run_id, "a")
    store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded, output_json='{"n": 1}')
    store.runs.apply_plan(run_id, Continuation(dispatch=[StepDispatch("b", "Echo", 1, "job-b-1")]))
    claim = store.runs.claim(
        run_id,
        "b",
        1,
        job_id="job-b-1",
        worker="w",
        lease_until=utcnow() + LATER,
        refs=["a"],
        with_trigger=False,
    )
    assert isinstance(claim, Claim)
    assert claim.run["id"] == run_id and "trigger_data_json" not in claim.run
    assert claim.refs["a"].status is StepStatus.Succeeded and claim.refs["a"].output_json == '{"n": 1}'
    assert claim.first_started_at is not None and claim.loop_item_json is None
    assert claim.snapshot.statuses == {"a": StepStatus.Succeeded, "b": StepStatus.Running}
    assert claim.snapshot.version >= 1


# -- complete, expand_loop ---------------------------------------------------------------------


def test_complete_is_refused_for_a_stale_attempt(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    assert store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded) == Refused(
        FenceRefusal.stale, "Pending#1"
    )
    _claim(store, run_id, "a")
    assert store.runs.complete(run_id, "a", 2, status=StepStatus.Succeeded) == Refused(
        FenceRefusal.stale, "Running#1"
    )
    done = store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded)
    assert isinstance(done, RunSnapshot) and done.statuses == {"a": StepStatus.Succeeded}
    assert store.runs.complete(run_id, "a", 1, status=StepStatus.Failed) == Refused(
        FenceRefusal.stale, "Succeeded#1"
    )


def test_recovery_completion_is_refused_once_the_lease_was_renewed(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    _claim(store, run_id, "a", lease=-LATER)
    expired_at = utcnow()
    assert store.runs.renew(run_id, "a", 1, utcnow() + LATER)
    lost = store.runs.complete(
        run_id, "a", 1, status=StepStatus.Failed, error="lost", lease_expired_before=expired_at
    )
    assert lost == Refused(FenceRefusal.stale, "lease renewed")
    assert store.runs.step_fields(run_id, "a")["status"] == "Running"


def test_complete_on_a_run_closed_meanwhile_queues_no_next_attempt(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a", "wait")
    _claim(store, run_id, "a")
    _claim(store, run_id, "wait")
    assert store.runs.end_run(run_id, RunStatus.TimedOut, "Run is TimedOut.") is RunStatus.TimedOut
    retry = NextAttempt(2, "job-a-2", utcnow())
    failed = store.runs.complete(run_id, "a", 1, status=StepStatus.Failed, error="boom", next_attempt=retry)
    assert isinstance(failed, RunSnapshot) and failed.statuses["a"] is StepStatus.Failed
    poll = NextAttempt(2, "job-wait-2", utcnow(), "step.pending")
    parked = store.runs.complete(run_id, "wait", 1, status=StepStatus.Pending, next_attempt=poll)
    assert isinstance(parked, RunSnapshot) and parked.statuses["wait"] is StepStatus.Skipped
    wait = store.runs.step_fields(run_id, "wait")
    assert wait["attempt"] == "1" and wait["error_message"] == "Run is TimedOut."
    assert (
        store.overdue.overdue_pending(utcnow() + LATER) == []
        and store.overdue.expired_leases(utcnow() + LATER) == []
    )


def test_complete_with_a_current_plan_applies_it_in_the_same_script(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    seen = _claim(store, run_id, "a").snapshot
    plan = Continuation(dispatch=[StepDispatch("b", "Echo", 1, "job-b-1")], version=seen.version)
    done = store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded, then=plan)
    assert isinstance(done, RunSnapshot) and done.applied == AppliedPlan(["b"], None, RunStatus.Running)
    assert done.statuses == {} and done.run == {}
    _claim(store, run_id, "b")
    outdated = Continuation(close=RunStatus.Succeeded, required=["a", "b"], version=seen.version)
    late = store.runs.complete(run_id, "b", 1, status=StepStatus.Succeeded, then=outdated)
    assert isinstance(late, RunSnapshot) and late.applied is None
    assert late.statuses == {"a": StepStatus.Succeeded, "b": StepStatus.Succeeded}


def test_a_plan_ahead_on_a_run_cancelled_meanwhile_is_planned_again_and_closes_it(space: Space) -> None:
    """A plan made ahead that does not close the run carries no status indexes; cancellation
    turns it into a close, so ``complete`` hands the state back and ``apply_plan`` closes the run."""
    store = _store(space)
    run_id = _running_run(space, "a")
    seen = _claim(store, run_id, "a").snapshot
    cancelled = store.runs.cancel_run(run_id, "stop")
    assert not isinstance(cancelled, Refused) and not cancelled.closed  # "a" still runs
    plan = Continuation(dispatch=[StepDispatch("b", "Echo", 1, "job-b-1")], version=seen.version)
    # ``seen`` (the claim's run: Running, not cancelled) is not trusted: the cancel raised the version.
    done = store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded, then=plan, seen=seen)
    assert isinstance(done, RunSnapshot) and done.applied is None
    assert done.statuses == {"a": StepStatus.Succeeded}
    again = Continuation(dispatch=[StepDispatch("b", "Echo", 1, "job-b-1")], version=done.version)
    applied = store.runs.apply_plan(run_id, again)
    assert applied == AppliedPlan([], RunStatus.Cancelled, RunStatus.Cancelled)


def test_a_run_that_kept_its_plan_version_in_the_run_hash_counts_on_from_it(space: Space) -> None:
    """Runs from before the version moved to the steps hash (``|v``) kept ``steps_version`` in
    the run hash: their plans are checked against it, and the next raise counts on from it."""
    store = _store(space)
    run_id = _running_run(space, "a")
    steps, run = space.keys.run_steps(run_id), space.keys.run(run_id)
    space.redis.hdel(steps, STEPS_VERSION_FIELD)
    space.redis.hset(run, "steps_version", "7")
    seen = _claim(store, run_id, "a").snapshot
    assert seen.version == 7
    plan = Continuation(dispatch=[StepDispatch("b", "Echo", 1, "job-b-1")], version=7)
    done = store.runs.complete(run_id, "a", 1, status=StepStatus.Succeeded, then=plan)
    assert isinstance(done, RunSnapshot) and done.applied == AppliedPlan(["b"], None, RunStatus.Running)
    assert space.redis.hget(steps, STEPS_VERSION_FIELD) == b"8"
    assert store.runs.run_state(run_id).version == 8
    stale = store.runs.apply_plan(run_id, Continuation(close=RunStatus.Succeeded, version=7))
    assert isinstance(stale, RunSnapshot), "a plan from before the raise is not applied"


def test_parking_after_the_signal_arrived_returns_it_instead(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "wait")
    assert store.signals.deliver_signal(run_id, "go", '{"ok": true}', declared=True, resumes={}) == Delivered(
        []
    )
    assert _park(store, run_id) == Signalled('{"ok": true}')
    assert store.runs.step_fields(run_id, "wait")["status"] == "Running", "nothing was parked"


def test_expand_loop_is_refused_for_a_stale_attempt(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a")
    stale = store.runs.expand_loop(run_id, "a", 1, items=[1, 2], input_json=None)
    assert stale == Refused(FenceRefusal.stale, "Pending#1")
    _claim(store, run_id, "a")
    expanded = store.runs.expand_loop(run_id, "a", 1, items=[1, 2], input_json=None)
    assert isinstance(expanded, RunSnapshot) and expanded.loops == {"a": LoopProgress(2)}
    assert store.runs.expand_loop(run_id, "a", 2, items=[1], input_json=None) == Refused(
        FenceRefusal.stale, "Running#1"
    )


# -- renew_many --------------------------------------------------------------------------------


def test_renewal_is_fenced_out_for_stale_attempts_and_released_leases(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "a", "wait")
    _claim(store, run_id, "a")
    _claim(store, run_id, "wait")
    until = utcnow() + LATER
    assert store.runs.renew(run_id, "a", 1, until) is True
    assert store.runs.renew(run_id, "a", 2, until) is False
    assert store.runs.renew_many([], until) == []
    leases = [(run_id, "a", 1), (run_id, "b", 1), (run_id, "a", 2), (run_id, "wait", 1)]
    assert store.runs.renew_many(leases, until) == [True, False, False, True]
    # An expanded ForEach step is still Running but holds no lease: it is not renewed.
    assert isinstance(store.runs.expand_loop(run_id, "wait", 1, items=[1], input_json=None), RunSnapshot)
    assert store.runs.renew_many(leases, until) == [True, False, False, False]


# -- deliver_signal ----------------------------------------------------------------------------


def test_signal_refusals(space: Space) -> None:
    store = _store(space)
    assert store.signals.deliver_signal(NO_RUN, "go", "1", declared=True, resumes={}) == Refused(
        SignalRefusal.no_run
    )
    run_id = _running_run(space, "wait")
    assert store.signals.deliver_signal(run_id, "nope", "1", declared=False, resumes={}) == Refused(
        SignalRefusal.unknown
    )
    assert store.signals.signal_record(run_id, "nope") is None
    assert store.signals.deliver_signal(run_id, "go", "1", declared=True, resumes={}) == Delivered([])
    already = store.signals.deliver_signal(run_id, "go", "2", declared=True, resumes={})
    assert isinstance(already, Refused) and already.reason is SignalRefusal.already and already.detail
    assert store.runs.end_run(run_id, RunStatus.Cancelled, "stopped") is RunStatus.Cancelled
    closed = store.signals.deliver_signal(run_id, "other", "1", declared=True, resumes={})
    assert closed == Refused(SignalRefusal.not_active, "Cancelled")


def test_signal_with_outdated_waiters_is_refused_as_changed(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "wait")
    assert isinstance(_park(store, run_id), RunSnapshot)
    assert store.signals.signal_waiters(run_id, "go") == {"wait": 2}
    changed = Refused(SignalRefusal.changed)
    assert store.signals.deliver_signal(run_id, "go", "1", declared=True, resumes={}) == changed
    wrong_attempt = {"wait": SignalResume(3, "job-wait-3")}
    assert store.signals.deliver_signal(run_id, "go", "1", declared=True, resumes=wrong_attempt) == changed
    extra = {"wait": SignalResume(2, "job-wait-2"), "a": SignalResume(1, "job-a-1")}
    assert store.signals.deliver_signal(run_id, "go", "1", declared=True, resumes=extra) == changed
    record = store.signals.signal_record(run_id, "go")
    assert record is not None and "delivered_at" not in record, "nothing written"


def test_signal_resumes_the_parked_steps(space: Space) -> None:
    store = _store(space)
    run_id = _running_run(space, "wait")
    assert isinstance(_park(store, run_id), RunSnapshot)
    resumes = {"wait": SignalResume(2, "job-wait-2")}
    assert store.signals.deliver_signal(run_id, "go", '"yes"', declared=False, resumes=resumes) == Delivered(
        ["wait"]
    )
    record = store.signals.signal_record(run_id, "go")
    assert record is not None and json.loads(record["payload_json"]) == "yes"
    assert store.overdue.overdue_pending(utcnow() + timedelta(seconds=1)) == [(run_id, "wait")]
    assert store.history.find_run_id_by_job("job-wait-2") == run_id


def test_signal_kept_when_no_step_parked_yet(space: Space) -> None:
    store = _store(space)
    run_id = _pending_run(space)
    assert store.signals.deliver_signal(run_id, "go", "1", declared=True, resumes={}) == Delivered([])
    assert store.signals.signal_waiters(run_id, "go") == {}
    assert store.history.find_run_id_by_job(str(uuid.uuid4())) is None


# -- idle_runs ---------------------------------------------------------------------------------


def test_idle_runs_are_pending_runs_and_running_runs_with_nothing_in_flight(space: Space) -> None:
    store = _store(space)
    pending = _pending_run(space)
    busy = _running_run(space, "a")
    quiet = _running_run(space, "a")
    _claim(store, quiet, "a")
    assert isinstance(store.runs.complete(quiet, "a", 1, status=StepStatus.Succeeded), RunSnapshot)
    idle = store.overdue.idle_runs(utcnow() + timedelta(seconds=1))
    assert sorted(idle) == sorted([(pending, RunStatus.Pending), (quiet, RunStatus.Running)])
    assert busy not in {run_id for run_id, _ in idle}
    assert store.overdue.idle_runs(utcnow() - LATER) == []


def test_idle_runs_reads_every_batch(space: Space) -> None:
    runs = [_pending_run(space) for _ in range(5)]
    idle = _store(space).overdue.idle_runs(utcnow() + timedelta(seconds=1), batch=2)
    assert sorted(idle) == sorted((run_id, RunStatus.Pending) for run_id in runs)


# -- read_hashes -------------------------------------------------------------------------------


def test_read_hashes_returns_the_fields_each_record_has_in_order(space: Space) -> None:
    store = _store(space)
    busy = _running_run(space, "a")
    pending = _pending_run(space)
    fields = ("status", "job_id", "no_such_field")
    assert store.runs.step_fields_many([(busy, "a"), (busy, "b"), (NO_RUN, "a")], fields) == [
        {"status": "Pending", "job_id": "job-a-1"},
        {},
        {},
    ]
    assert store.runs.run_fields_many([pending, busy, NO_RUN], ("status",)) == [
        {"status": "Pending"},
        {"status": "Running"},
        {},
    ]
    assert store.runs.run_fields_many([], ("status",)) == []
