"""Recovery: re-dispatch work lost with a dead worker, close runs nothing will close, end overdue runs.

Run by the scheduler process every ``recovery_interval_seconds`` and by every worker at start.
Every repair goes through the same fenced transitions as normal execution, so running it
concurrently in several processes, or while the work it repairs is still alive, is safe.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from flowjobs.clock import utcnow
from flowjobs.engine import Engine
from flowjobs.jobs import trigger_call
from flowjobs.runtime.base import JobState, step_job_id
from flowjobs.statuses import RunStatus, StepStatus
from flowjobs.store import Completion, NextAttempt

log = structlog.get_logger("flowjobs.recovery")

TIMED_OUT_REASON = "Run is TimedOut."
_WAITING = (JobState.Enqueued, JobState.Scheduled)


def recover(engine: Engine, *, grace_seconds: float | None = None) -> int:
    """One recovery pass; returns how many things it repaired.

    - a claimed step whose lease expired gets a new attempt (at-least-once);
    - a dispatched step whose RQ job is gone, or ended without claiming it, is queued again;
    - a Pending run whose trigger job is gone gets its trigger job again;
    - a Running run with nothing in flight is re-planned (which closes it when all is final);
    - a run past its deadline is ended as TimedOut, its queued and parked steps skipped.

    ``grace_seconds`` (default: the claim lease) is how old dispatched work must be before it
    counts as lost.
    """
    grace = timedelta(seconds=engine.lease_seconds if grace_seconds is None else grace_seconds)
    now = utcnow()
    store = engine.store
    fixed = 0
    for run_id in store.overdue_runs(now):
        if store.end_run(run_id, RunStatus.TimedOut, TIMED_OUT_REASON):
            log.warning("run.timed_out", run_id=run_id)
            fixed += 1
    for run_id, step_key in store.expired_leases(now):
        fixed += _expired_claim(engine, run_id, step_key, now)
    for run_id, step_key in store.overdue_pending(now - grace):
        fixed += _lost_job(engine, run_id, step_key)
    for run_id, status in store.idle_runs(now - grace):
        fixed += _stalled_run(engine, run_id, status)
    return fixed


def _expired_claim(engine: Engine, run_id: str, step_key: str, now: datetime) -> int:
    fields = engine.store.step_fields(run_id, step_key)
    if fields.get("status") != StepStatus.Running or "attempt" not in fields:
        return 0
    attempt = int(fields["attempt"])
    next_attempt = NextAttempt(
        attempt=attempt + 1,
        job_id=step_job_id(run_id, step_key, attempt + 1),
        due=now,
        message=f"claim lease of attempt {attempt} expired; attempt {attempt + 1} dispatched",
    )
    completed = engine.store.complete(
        run_id,
        step_key,
        attempt,
        status=StepStatus.Failed,
        error=f"Claim lease expired: the worker executing attempt {attempt} was lost.",
        next_attempt=next_attempt,
        lease_expired_before=now,
    )
    if not isinstance(completed, Completion):
        return 0
    log.warning("step.lease_expired", run_id=run_id, step_key=step_key, attempt=attempt)
    if completed.statuses.get(step_key, StepStatus.Pending).is_final:
        return 1  # the run closed meanwhile: the step failed for good, no new attempt
    engine.runner.enqueue(engine.step_call(run_id, completed.run, step_key, attempt + 1))
    return 1


def _lost_job(engine: Engine, run_id: str, step_key: str) -> int:
    fields = engine.store.step_fields(run_id, step_key)
    job_id = fields.get("job_id")
    if fields.get("status") != StepStatus.Pending or not job_id:
        return 0
    if engine.runner.state(job_id) in _WAITING:
        return 0
    log.warning("step.job_lost", run_id=run_id, step_key=step_key, job_id=job_id)
    run_fields = engine.store.run_fields(run_id)
    engine.runner.enqueue(engine.step_call(run_id, run_fields, step_key, int(fields["attempt"])))
    return 1


def _stalled_run(engine: Engine, run_id: str, status: RunStatus) -> int:
    state = engine.store.run_state(run_id)
    run_fields = state.run
    if status is RunStatus.Pending:
        job_id = run_fields.get("background_job_id")
        if not job_id or engine.runner.state(job_id) in _WAITING:
            return 0
        log.warning("run.trigger_job_lost", run_id=run_id, job_id=job_id)
        engine.runner.enqueue(trigger_call(run_id, run_fields["flow_id"], run_fields.get("flow_name")))
        return 1
    # A healthy Running run always has a step in flight: an idle one lost its continuation.
    log.warning("run.replanned", run_id=run_id)
    engine.continue_run(run_id, state)
    return 1
