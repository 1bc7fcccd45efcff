"""Recovery: re-dispatch work lost with a dead worker, close runs nothing will close, end overdue runs.

Run as duties (``flowjobs.duties``) by every worker process and by the optional scheduler. Every
repair goes through the same fenced transitions as normal execution, so running it concurrently
in several processes, or while the work it repairs is still alive, is safe. Each repair is
isolated: one run that cannot be repaired is logged (``recovery.failed``) and, when it can never
be planned again, ended Failed; the pass goes on with the next.

A pass looks its candidates up in batches (``RECOVERY_BATCH``): their step or run hashes in one
pipelined round-trip, then the states of the jobs those name in one more, so a pass over
thousands of healthy runs costs a few round-trips rather than one or two per run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import structlog
from redis.client import Pipeline

from flowjobs.core.clock import utcnow
from flowjobs.core.job_calls import JobCall, JobState, trigger_call
from flowjobs.core.manifest import FlowManifest
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.core.transitions import REASONS
from flowjobs.core.trigger_headers import TRACEPARENT_HEADER, TRACESTATE_HEADER
from flowjobs.engine import Engine
from flowjobs.runtime.base import enqueue_in
from flowjobs.runtime.rq import RQJobRunner, TakenJob
from flowjobs.store.base import REDIS_DOWN

log = structlog.get_logger("flowjobs.recovery")

TIMED_OUT_REASON = REASONS.closed(RunStatus.TimedOut)
#: Default of ``FLOWJOBS_MAX_LOST_ATTEMPTS``: a lost worker is rarely the step's doing (a deploy,
#: an autoscaler, a node loss), and a step that crashes its work-horse is stopped by its own limit
#: (``Engine.record_crash``). Sidekiq Pro's super_fetch calls a job recovered 3 times a poison pill;
#: Hangfire requeues without limit.
DEFAULT_MAX_LOST_ATTEMPTS = 20
#: Back-off of a re-dispatched lost attempt: none after the first loss, then 1 s doubling to this.
MAX_LOST_BACKOFF_SECONDS = 30.0
#: Candidates a pass looks up per round-trip (their hashes, then their jobs' states).
RECOVERY_BATCH = 500
_WAITING = (JobState.Enqueued, JobState.Scheduled)
#: How long a worker may hold a job it dequeued before starting it (RQ's next two round-trips),
#: at most the grace: a job held longer was taken by a worker that died. A live worker that was
#: only slower costs a second copy of the job, which is harmless: one claims, the other is refused.
DEQUEUED_SECONDS = 1.0

#: The step fields recovery reads (its batches read no others: a step record holds outputs too).
STEP_FIELDS = ("status", "attempt", "job_id", "lost_attempts")
#: The run fields a Pending run's repair reads (a run hash holds the trigger data too).
TRACE_FIELDS = (TRACEPARENT_HEADER, TRACESTATE_HEADER)
TRIGGER_FIELDS = ("background_job_id", "flow_id", "flow_name", *TRACE_FIELDS)
#: A candidate of a pass: a step as (run id, step key), or a run by its id.
_Candidate = TypeVar("_Candidate", tuple[str, str], str)


class Unplannable(Exception):
    """A run that can never be planned again (its pinned manifest is missing or unparsable)."""


@dataclass(frozen=True)
class Found:
    """What a pass read about one candidate, in its batch, before repairing it."""

    fields: dict[str, str]
    """The step's ``STEP_FIELDS``; for a Pending run, its ``TRIGGER_FIELDS`` (those present: none
    when there is no such record)."""
    job_state: JobState | None = None
    """State of the job the fields name (a dispatched step's ``job_id``, a Pending run's
    ``background_job_id``); None when they name none or the pass does not check jobs."""
    taken: TakenJob | None = None
    """The worker that took that job off the queue and has not finished it (RQ), if one did."""


def recover(
    engine: Engine,
    *,
    grace_seconds: float | None = None,
    max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
    batch_size: int = RECOVERY_BATCH,
) -> int:
    """One full recovery pass (every duty of this module at once); returns how many things it repaired.

    - a run past its deadline is ended as TimedOut, its queued and parked steps skipped;
    - a claimed step whose lease expired gets a new attempt, within the lost-attempt limit;
    - a dispatched step whose RQ job is gone, ended without claiming it, or is held by a dead worker
      (RQ's intermediate list or started registry) is queued again;
    - a Pending run whose trigger job is gone, or is held by a dead worker, gets its trigger job again;
    - a Running run with nothing in flight is re-planned (which closes it when all is final).

    ``grace_seconds`` (default: the claim lease) is how old dispatched work must be before it
    counts as lost; ``batch_size`` (at least 1) how many candidates are looked up per round-trip.
    """
    return (
        sweep_deadlines(engine)
        + recover_claims(engine, max_lost_attempts=max_lost_attempts, batch_size=batch_size)
        + recover_jobs(engine, grace_seconds=grace_seconds, batch_size=batch_size)
        + recover_runs(engine, grace_seconds=grace_seconds, batch_size=batch_size)
    )


def sweep_deadlines(engine: Engine) -> int:
    """End every run past its deadline as TimedOut."""
    fixed = 0
    for run_id in engine.store.overdue.overdue_runs(utcnow()):
        fixed += _isolated(engine, run_id, None, partial(_time_out, engine, run_id))
    return fixed


def recover_claims(
    engine: Engine,
    *,
    max_lost_attempts: int = DEFAULT_MAX_LOST_ATTEMPTS,
    batch_size: int = RECOVERY_BATCH,
) -> int:
    """Record the attempts whose claim lease expired as lost, and re-dispatch or fail their steps."""
    now = utcnow()
    repair = partial(_expired_claim, engine, now, max_lost_attempts)
    read = partial(_read_steps, engine)
    return _repair_in_batches(engine, engine.store.overdue.expired_leases(now), read, repair, batch_size)


def recover_jobs(
    engine: Engine, *, grace_seconds: float | None = None, batch_size: int = RECOVERY_BATCH
) -> int:
    """Queue again the dispatched steps whose RQ job is gone, ended without claiming them, or is
    held by a dead worker; a job in the queue or held by a live worker is left alone."""
    grace = _grace(engine, grace_seconds)
    overdue = engine.store.overdue.overdue_pending(utcnow() - grace)
    read = partial(_read_step_jobs, engine)
    return _repair_in_batches(engine, overdue, read, partial(_lost_job, engine, grace), batch_size)


def recover_runs(
    engine: Engine, *, grace_seconds: float | None = None, batch_size: int = RECOVERY_BATCH
) -> int:
    """Restart Pending runs whose trigger job is gone; re-plan Running runs with nothing in flight."""
    grace = _grace(engine, grace_seconds)
    idle = engine.store.overdue.idle_runs(utcnow() - grace)
    pending = [run_id for run_id, status in idle if status is RunStatus.Pending]
    read = partial(_read_trigger_jobs, engine)
    fixed = _repair_in_batches(engine, pending, read, partial(_lost_trigger, engine, grace), batch_size)
    for run_id, status in idle:
        if status is not RunStatus.Pending:
            # Nothing to look up first: every such run is a repair (and reads its own snapshot).
            fixed += _isolated(engine, run_id, None, partial(_replan, engine, run_id))
    return fixed


def _grace(engine: Engine, grace_seconds: float | None) -> timedelta:
    return timedelta(seconds=engine.lease_seconds if grace_seconds is None else grace_seconds)


def _repair_in_batches(
    engine: Engine,
    candidates: Sequence[_Candidate],
    read: Callable[[Sequence[_Candidate]], list[Found]],
    repair: Callable[[_Candidate, Found], int],
    batch_size: int,
) -> int:
    """Repair each candidate, isolated, with what ``read`` found about it, ``batch_size`` at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    fixed = 0
    for start in range(0, len(candidates), batch_size):
        fixed += _repair_batch(engine, candidates[start : start + batch_size], read, repair)
    return fixed


def _repair_batch(
    engine: Engine,
    batch: Sequence[_Candidate],
    read: Callable[[Sequence[_Candidate]], list[Found]],
    repair: Callable[[_Candidate, Found], int],
) -> int:
    try:
        found = read(batch)
    except REDIS_DOWN:
        raise
    except Exception as error:
        if len(batch) == 1:
            return _failed(engine, *_where(batch[0]), error)
        # One unreadable record (a key of the wrong type, a job hash RQ cannot decode) fails the
        # whole pipelined read: read each candidate alone, so that only it fails, as one at a time.
        return sum(_repair_batch(engine, [candidate], read, repair) for candidate in batch)
    fixed = 0
    for candidate, seen in zip(batch, found, strict=True):
        fixed += _isolated(engine, *_where(candidate), partial(repair, candidate, seen))
    return fixed


def _where(candidate: tuple[str, str] | str) -> tuple[str, str | None]:
    """(run id, step key or None) of a candidate, for the logs."""
    return (candidate, None) if isinstance(candidate, str) else candidate


def _read_steps(engine: Engine, steps: Sequence[tuple[str, str]]) -> list[Found]:
    """The steps' hashes, in one round-trip."""
    return [Found(fields) for fields in engine.store.runs.step_fields_many(steps, STEP_FIELDS)]


def _read_step_jobs(engine: Engine, steps: Sequence[tuple[str, str]]) -> list[Found]:
    """The steps' hashes and the states of the jobs of the dispatched ones, in two round-trips."""
    return _with_job_states(engine, engine.store.runs.step_fields_many(steps, STEP_FIELDS), _dispatched_job)


def _read_trigger_jobs(engine: Engine, run_ids: Sequence[str]) -> list[Found]:
    """The runs' hashes and the states of their trigger jobs, in two round-trips."""
    return _with_job_states(engine, engine.store.runs.run_fields_many(run_ids, TRIGGER_FIELDS), _trigger_job)


def _with_job_states(
    engine: Engine, records: list[dict[str, str]], job_of: Callable[[dict[str, str]], str | None]
) -> list[Found]:
    """Each record with the state of the job it names, all looked up with one ``states`` call."""
    job_ids = [job_of(fields) for fields in records]
    named = [job_id for job_id in job_ids if job_id is not None]
    runner = engine.runner
    if isinstance(runner, RQJobRunner):
        where = runner.whereabouts(named)
        return [
            Found(fields, where[job_id].state, where[job_id].taken) if job_id is not None else Found(fields)
            for fields, job_id in zip(records, job_ids, strict=True)
        ]
    states = runner.states(named)
    return [
        Found(fields, states[job_id] if job_id is not None else None)
        for fields, job_id in zip(records, job_ids, strict=True)
    ]


def _dispatched_job(step_fields: dict[str, str]) -> str | None:
    """The job of a dispatched (Pending) step's current attempt; None for any other step."""
    job_id = step_fields.get("job_id")
    return job_id if job_id and step_fields.get("status") == StepStatus.Pending else None


def _trigger_job(run_fields: dict[str, str]) -> str | None:
    """The run's trigger job, if its record names one."""
    return run_fields.get("background_job_id") or None


def _isolated(engine: Engine, run_id: str, step_key: str | None, repair: Callable[[], int]) -> int:
    """Run one repair; a failure is logged (and an unplannable run ended Failed) instead of stopping
    the pass. Redis being unreachable is not a bad run: it propagates."""
    try:
        return repair()
    except REDIS_DOWN:
        raise
    except Exception as error:
        return _failed(engine, run_id, step_key, error)


def _failed(engine: Engine, run_id: str, step_key: str | None, error: Exception) -> int:
    """Log a repair (or look-up) that failed; end the run Failed when it can never be planned again."""
    log.error("recovery.failed", run_id=run_id, step_key=step_key, error=repr(error))
    if isinstance(error, Unplannable):
        return _fail_run(engine, run_id, str(error))
    return 0


def _fail_run(engine: Engine, run_id: str, reason: str) -> int:
    try:
        closed = engine.store.runs.end_run(run_id, RunStatus.Failed, reason)
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
        return engine.store.flows.load_manifest(manifest_hash)
    except REDIS_DOWN:
        raise
    except (LookupError, ValueError) as error:
        raise Unplannable(
            f"Run cannot be planned: its pinned manifest {manifest_hash} is missing or unparsable ({error})."
        ) from error


def _time_out(engine: Engine, run_id: str) -> int:
    if engine.store.runs.end_run(run_id, RunStatus.TimedOut, TIMED_OUT_REASON) is None:
        return 0
    log.warning("run.timed_out", run_id=run_id)
    return 1


def _expired_claim(
    engine: Engine, now: datetime, max_lost_attempts: int, step: tuple[str, str], found: Found
) -> int:
    """Record the attempt as lost (Failed, "Claim lease expired") and re-dispatch the step, with
    back-off (``lost_backoff``), while it has lost at most ``max(max_lost_attempts,
    retry.max_attempts - 1)`` attempts; fail it after.

    ``found`` was read with its batch, before the repairs ahead of it: ``complete`` is fenced by
    the attempt and refuses when the lease was renewed meanwhile, so a stale read repairs nothing."""
    store = engine.store
    run_id, step_key = step
    fields = found.fields
    if fields.get("status") != StepStatus.Running or "attempt" not in fields:
        return 0
    attempt = int(fields["attempt"])
    error = f"Claim lease expired: the worker executing attempt {attempt} was lost."
    try:
        metadata = _manifest(engine, run_id, store.history.run_fields(run_id)).step(step_key)
    except Unplannable as unplannable:
        # Record the lost attempt with the reason (its lease goes with it, so no later pass meets
        # it again); the caller then ends the run.
        reason = f"{error} {unplannable}"
        store.runs.complete(
            run_id, step_key, attempt, status=StepStatus.Failed, error=reason, lease_expired_before=now
        )
        raise
    limit = max(max_lost_attempts, metadata.retry.max_attempts - 1 if metadata and metadata.retry else 0)
    lost = int(fields.get("lost_attempts", "0")) + 1  # complete.lua counts this one
    next_attempt = None
    if lost <= limit:
        delay = lost_backoff(lost)
        next_attempt = engine.next_attempt(
            run_id,
            step_key,
            attempt,
            due=now + timedelta(seconds=delay),
            message=f"claim lease of attempt {attempt} expired; attempt {attempt + 1} in {delay:g}s",
        )
    else:
        error = f"Claim lease expired: worker lost {lost} times; not re-dispatched."
    if (
        engine.end_attempt(
            run_id, step_key, attempt, error=error, next_attempt=next_attempt, lease_expired_before=now
        )
        is None
    ):
        return 0
    log.warning("step.lease_expired", run_id=run_id, step_key=step_key, attempt=attempt, lost=lost)
    return 1


def lost_backoff(lost: int) -> float:
    """Seconds before re-dispatching a step that lost ``lost`` attempts with its worker: none the
    first time (a worker killed once, as in a deploy), then 1 s doubling up to 30 s."""
    return 0.0 if lost <= 1 else min(2.0 ** (lost - 2), MAX_LOST_BACKOFF_SECONDS)


def _lost_job(engine: Engine, grace: timedelta, step: tuple[str, str], found: Found) -> int:
    """Queue a dispatched step's job again when its job is neither waiting to run nor held by a
    live worker, as long as the step is still dispatched with that job."""
    run_id, step_key = step
    job_id = _dispatched_job(found.fields)
    if job_id is None or _waiting(found, grace):
        return 0
    run_fields = engine.store.history.run_fields(run_id)
    _manifest(engine, run_id, run_fields)
    attempt = found.fields["attempt"]
    call = engine.attempt_call(run_id, run_fields, step_key, int(attempt))
    expected = {"status": StepStatus.Pending.value, "attempt": attempt, "job_id": job_id}
    record, watched = engine.store.runs.step_watch(run_id, step_key, expected)
    if not _requeue(engine, record, watched, call, found.taken, "lost_job"):
        return 0
    log.warning("step.job_lost", run_id=run_id, step_key=step_key, job_id=job_id, taken=_taker(found))
    return 1


def _lost_trigger(engine: Engine, grace: timedelta, run_id: str, found: Found) -> int:
    """Queue a Pending run's trigger job again when it is neither waiting to run nor held by a live
    worker, as long as the run is still Pending."""
    job_id = _trigger_job(found.fields)
    if job_id is None or _waiting(found, grace):
        return 0
    # The caller's trace context, stored on the run at its trigger: the run joins the same trace.
    trace = {name: found.fields[name] for name in TRACE_FIELDS if found.fields.get(name)}
    call = trigger_call(run_id, found.fields["flow_id"], found.fields.get("flow_name"), trace)
    expected = {"status": RunStatus.Pending.value, "background_job_id": job_id}
    if not _requeue(engine, engine.store.keys.run(run_id), expected, call, found.taken, "lost_trigger"):
        return 0
    log.warning("run.trigger_job_lost", run_id=run_id, job_id=job_id, taken=_taker(found))
    return 1


def _waiting(found: Found, grace: timedelta) -> bool:
    """Whether the job is waiting to run, or held by a worker that is alive: a started job's worker
    beat within the grace; a dequeued one was first seen so less than ``DEQUEUED_SECONDS`` ago."""
    taken = found.taken
    if taken is None:
        return found.job_state in _WAITING
    held_for = min(grace, timedelta(seconds=DEQUEUED_SECONDS)) if taken.worker is None else grace
    return taken.since is not None and utcnow() - taken.since < held_for


def _requeue(
    engine: Engine,
    key: str,
    expected: Mapping[str, str | None],
    call: JobCall,
    taken: TakenJob | None,
    kind: str,
) -> bool:
    """Queue the job again, and forget the dead worker that took it, while the record ``key`` still
    holds ``expected``: a copy queued after its attempt ended would pass for a requeue by hand.
    Counted as a recovery of ``kind`` in the same transaction."""
    runner = engine.runner

    def write(pipe: Pipeline) -> None:
        if taken is not None and isinstance(runner, RQJobRunner):
            runner.release(call.job_id, taken, pipe)
        enqueue_in(runner, call, pipe)
        if isinstance(runner, RQJobRunner):
            runner.reuse(call.job_id, pipe)
        engine.store.metrics.count_metric("recoveries", kind, pipe=pipe)

    return engine.store.overdue.write_if_unchanged(key, expected, write)


def _taker(found: Found) -> str | None:
    """The worker that took the job, for the logs ("dequeued" when RQ records none)."""
    if found.taken is None:
        return None
    return found.taken.worker or "dequeued"


def _replan(engine: Engine, run_id: str) -> int:
    """Re-plan a Running run with nothing in flight (which closes it when all is final)."""
    state = engine.store.runs.run_state(run_id)
    # A healthy Running run always has a step in flight: an idle one lost its continuation.
    _manifest(engine, run_id, state.run)
    log.warning("run.replanned", run_id=run_id)
    engine.continue_run(run_id, state)
    engine.store.metrics.count_metric("recoveries", "replanned")
    return 1
