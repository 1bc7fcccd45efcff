"""Retrying a Failed step as a new attempt: the one operation both ``FlowClient.retry_step`` and the
engine perform (the engine when a step's failed job is requeued by hand, from rq-dashboard or
``rq requeue``), so both go through the same checks and the same script."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from flowjobs.core.clock import epoch_ms, iso, utcnow
from flowjobs.core.errors import RunCancelled, RunNotFound, StepNotFound, StepNotRetryable
from flowjobs.core.job_calls import step_call
from flowjobs.core.manifest import StepKind
from flowjobs.core.transitions import STEP_RULES
from flowjobs.runtime.base import JobRunner
from flowjobs.store.run_store import RunStore
from flowjobs.store.transitions import Refused, RetryRefusal


def retry_failed_step(
    store: RunStore,
    runner: JobRunner,
    run_id: UUID | str,
    step_key: str,
    *,
    clear_cancel: bool = False,
    attempt: int | None = None,
) -> int:
    """Queue a new attempt of a Failed top-level step as its own job (one script: the failed attempt
    archived, Skipped descendants reset, a closed run reopened, the job enqueued); returns its
    number. With ``attempt``, only if the step is Failed at exactly that attempt. A reopened run
    gets a deadline again if it had one (``reopened_deadline``).

    ``StepNotRetryable``, ``RunCancelled``, ``RunNotFound``, ``StepNotFound`` as for
    ``FlowClient.retry_step``.
    """
    run_fields = store.history.run_fields(run_id)
    if "manifest_hash" not in run_fields:
        raise RunNotFound(f"no run with id {run_id}")
    manifest = store.flows.load_manifest(run_fields["manifest_hash"])
    step = manifest.step(step_key)
    if step is None:
        raise StepNotFound(f"run {run_id} has no step {step_key!r}")
    if step.kind is StepKind.for_each or step_key not in manifest.steps:
        raise StepNotRetryable(
            f"step {step_key!r} is a ForEach step or one of its iterations: these cannot be retried "
            "one by one; re-run the run instead"
        )
    fields = store.runs.step_fields(run_id, step_key)
    if fields.get("status") not in STEP_RULES["retry"].source:
        raise StepNotRetryable(
            f"step {step_key!r} of run {run_id} is {fields.get('status', 'not started')}; "
            "only a Failed step can be retried"
        )
    failed_attempt = int(fields["attempt"])
    if attempt is not None and failed_attempt != attempt:
        raise StepNotRetryable(
            f"step {step_key!r} of run {run_id} failed last at attempt {failed_attempt}, not {attempt}"
        )
    call = step_call(str(run_id), run_fields, step_key, failed_attempt + 1, step.timeout_seconds)
    commands = runner.enqueue_commands([call])
    answer = store.runs.retry_step(
        run_id,
        step_key,
        failed_attempt,
        job_id=call.job_id,
        commands=commands[0] if commands is not None else (),
        reset=manifest.descendants(step_key),
        clear_cancel=clear_cancel,
        deadline=reopened_deadline(run_fields, utcnow()),
    )
    if isinstance(answer, Refused):
        if answer.reason is RetryRefusal.cancelled:
            raise RunCancelled(
                f"run {run_id} was cancelled; retry with clear_cancel=True (--clear-cancel) to clear "
                "the cancel and retry the step"
            )
        if answer.reason is RetryRefusal.not_failed:
            raise StepNotRetryable(
                f"step {step_key!r} of run {run_id} is no longer Failed at attempt {failed_attempt} "
                f"(now {answer.detail}): another retry or re-run won"
            )
        raise RunNotFound(f"no run with id {run_id}")
    if commands is None:
        runner.enqueue(call)
    return answer


def reopened_deadline(run_fields: Mapping[str, str], now: datetime) -> dict[str, Any] | None:
    """The deadline of a run a retry reopens (``retry_step.lua``'s ``deadline``), None without one.

    Closing a run takes it off the deadline index, so the retry puts it back: the run's own
    ``timeout_at`` while that is still ahead (a retry never extends a run's time), else a fresh
    window as long as the run's (its ``runTimeoutSeconds``), counted from ``now``. The window's start
    is kept as ``deadline_from`` so later reopenings measure the same length.
    """
    if "timeout_at" not in run_fields:
        return None
    due = datetime.fromisoformat(run_fields["timeout_at"])
    if due > now:
        return {"due_ms": epoch_ms(due)}
    began = datetime.fromisoformat(run_fields.get("deadline_from", run_fields["started_at"]))
    fresh = now + (due - began)
    return {"due_ms": epoch_ms(fresh), "timeout_at": iso(fresh), "deadline_from": iso(now)}
