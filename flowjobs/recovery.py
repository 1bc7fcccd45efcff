"""Recovery: re-dispatch work lost with a dead worker, close runs nothing will close, end overdue runs.

Run as duties (``flowjobs.duties``) by every worker process and by the optional scheduler. Every
repair goes through the same fenced transitions as normal execution, so running it concurrently
in several processes, or while the work it repairs is still alive, is safe. Each repair is
isolated: one run that cannot be repaired is logged (``recovery.failed``) and, when it can never
be planned again, ended Failed; the pass goes on with the next.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flowjobs.clock import utcnow
from flowjobs.engine import Engine
from flowjobs.jobs import trigger_call
from flowjobs.manifest import FlowManifest
from flowjobs.runtime.base import JobState
from flowjobs.statuses import RunStatus, StepStatus
from flowjobs.store.transitions import RunSnapshot

log = structlog.get_logger("flowjobs.recovery")

TIMED_OUT_REASON = "Run is TimedOut."
#: Errors that mean Redis is unreachable: not a bad run, so they stop the pass (the duty backs off).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
#: Default of ``FLOWJOBS_MAX_LOST_ATTEMPTS``.
DEFAULT_MAX_LOST_ATTEMPTS = 1
_WAITING = (JobState.Enqueued, JobState.Scheduled)


class Unplannable(Exception):
    """A run that can never be planned again (its pinned manifest is missing or unparsable)."""


def recover(
    engine: Engine,
    *,
    grace_seconds: float | None = None,
    max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
) -> int:
    """One full recovery pass (every duty of this module at once); returns how many things it repaired.

    - a run past its deadline is ended as TimedOut, its queued and parked steps skipped;
    - a claimed step whose lease expired gets a new attempt, within the lost-attempt limit;
    - a dispatched step whose RQ job is gone, or ended without claiming it, is queued again;
    - a Pending run whose trigger job is gone gets its trigger job again;
    - a Running run with nothing in flight is re-planned (which closes it when all is final).

    ``grace_seconds`` (default: the claim lease) is how old dispatched work must be before it
    counts as lost.
    """
    return (
        sweep_deadlines(engine)
        + recover_claims(engine, max_lost_attempts=max_lost_attempts)
        + recover_jobs(engine, grace_seconds=grace_seconds)
        + recover_runs(engine, grace_seconds=grace_seconds)
    )


def sweep_deadlines(engine: Engine) -> int:
    """End every run past its deadline as TimedOut."""
    fixed = 0
    for run_id in engine.store.overdue_runs(utcnow()):
        fixed += _isolated(engine, run_id, None, partial(_time_out, engine, run_id))
    return fixed


def recover_claims(engine: Engine, *, max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS) -> int:
    """Record the attempts whose claim lease expired as lost, and re-dispatch or fail their steps."""
    now = utcnow()
    fixed = 0
    for run_id, step_key in engine.store.expired_leases(now):
        repair = partial(_expired_claim, engine, run_id, step_key, now, max_lost_attempts)
        fixed += _isolated(engine, run_id, step_key, repair)
    return fixed


def recover_jobs(engine: Engine, *, grace_seconds: float | None = None) -> int:
    """Queue again the dispatched steps whose RQ job is gone (or ended without claiming them)."""
    fixed = 0
    for run_id, step_key in engine.store.overdue_pending(utcnow() - _grace(engine, grace_seconds)):
        fixed += _isolated(engine, run_id, step_key, partial(_lost_job, engine, run_id, step_key))
    return fixed


def recover_runs(engine: Engine, *, grace_seconds: float | None = None) -> int:
    """Restart Pending runs whose trigger job is gone; re-plan Running runs with nothing in flight."""
    fixed = 0
    for run_id, status in engine.store.idle_runs(utcnow() - _grace(engine, grace_seconds)):
        fixed += _isolated(engine, run_id, None, partial(_stalled_run, engine, run_id, status))
    return fixed


def _grace(engine: Engine, grace_seconds: float | None) -> timedelta:
    return timedelta(seconds=engine.lease_seconds if grace_seconds is None else grace_seconds)


def _isolated(engine: Engine, run_id: str, step_key: str | None, repair: Callable[[], int]) -> int:
    """Run one repair; a failure is logged (and an unplannable run ended Failed) instead of stopping
    the pass. Redis being unreachable is not a bad run: it propagates."""
    try:
        return repair()
    except REDIS_DOWN:
        raise
    except Exception as error:
        log.error("recovery.failed", run_id=run_id, step_key=step_key, error=repr(error))
        if isinstance(error, Unplannable):
            return _fail_run(engine, run_id, str(error))
        return 0


def _fail_run(engine: Engine, run_id: str, reason: str) -> int:
    try:
        closed = engine.store.end_run(run_id, RunStatus.Failed, reason)
    except REDIS_DOWN:
        raise
    except Exception as error:
        log.error("recovery.failed", run_id=run_id, error=repr(error))
        return 0
    if closed is None:
        return 0
    log.warning("run.failed_unplannable", run_id=run_id, reason=reason)
    return 1


def _manifest(engine: Engine, run_id: str, run_fields: dict[str, str]) -> FlowManifest:
    """The manifest the run is pinned to; ``Unplannable`` when it is missing or unparsable."""
    manifest_hash = run_fields.get("manifest_hash")
    if not manifest_hash:
        raise Unplannable("Run cannot be planned: it names no pinned manifest.")
    try:
        return engine.store.load_manifest(manifest_hash)
    except REDIS_DOWN:
        raise
    except (LookupError, ValueError) as error:
        raise Unplannable(
            f"Run cannot be planned: its pinned manifest {manifest_hash} is missing or unparsable ({error})."
        ) from error


def _time_out(engine: Engine, run_id: str) -> int:
    if engine.store.end_run(run_id, RunStatus.TimedOut, TIMED_OUT_REASON) is None:
        return 0
    log.warning("run.timed_out", run_id=run_id)
    return 1


def _expired_claim(engine: Engine, run_id: str, step_key: str, now: datetime, max_lost_attempts: int) -> int:
    """Record the attempt as lost (Failed, "Claim lease expired") and re-dispatch the step while it
    has lost at most ``max(max_lost_attempts, retry.max_attempts - 1)`` attempts; fail it after."""
    store = engine.store
    fields = store.step_fields(run_id, step_key)
    if fields.get("status") != StepStatus.Running or "attempt" not in fields:
        return 0
    attempt = int(fields["attempt"])
    error = f"Claim lease expired: the worker executing attempt {attempt} was lost."
    try:
        step = _manifest(engine, run_id, store.run_fields(run_id)).step(step_key)
    except Unplannable as unplannable:
        # Record the lost attempt with the reason (its lease goes with it, so no later pass meets
        # it again); the caller then ends the run.
        reason = f"{error} {unplannable}"
        store.complete(
            run_id, step_key, attempt, status=StepStatus.Failed, error=reason, lease_expired_before=now
        )
        raise
    limit = max(max_lost_attempts, step.retry.max_attempts - 1 if step and step.retry else 0)
    lost = int(fields.get("lost_attempts", "0")) + 1  # complete.lua counts this one
    next_attempt = None
    if lost <= limit:
        next_attempt = engine.next_attempt(
            run_id,
            step_key,
            attempt,
            due=now,
            message=f"claim lease of attempt {attempt} expired; attempt {attempt + 1} dispatched",
        )
    else:
        error = f"Claim lease expired: worker lost {lost} times; not re-dispatched."
    completed = store.complete(
        run_id,
        step_key,
        attempt,
        status=StepStatus.Failed,
        error=error,
        next_attempt=next_attempt,
        lease_expired_before=now,
    )
    if not isinstance(completed, RunSnapshot):
        return 0
    log.warning("step.lease_expired", run_id=run_id, step_key=step_key, attempt=attempt, lost=lost)
    if next_attempt is None:
        log.warning("step.failed", run_id=run_id, step_key=step_key, error=error)
        engine.continue_run(run_id, completed)  # the step is final: plan what follows, close the run
    else:
        # Queues nothing if the run closed meanwhile: the step failed for good, no new attempt.
        engine.schedule_attempt(run_id, step_key, next_attempt, completed)
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
    _manifest(engine, run_id, run_fields)
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
    _manifest(engine, run_id, run_fields)
    log.warning("run.replanned", run_id=run_id)
    engine.continue_run(run_id, state)
    return 1
