"""Executes runs: starts them, runs step attempts (handlers and built-in kinds), plans continuations.

A job function (``flowjobs.jobs``) calls the engine; the engine records through the store, decides
with the core's planner, and hands new jobs to the runner. It sits above the store, the runner and
the core, and below the application layer (client, recovery, duties), which calls it back only
through those job functions and the duties: see docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import rq
import structlog
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from flowjobs import tracing
from flowjobs.control import retry_failed_step
from flowjobs.core.backoff import retry_delay
from flowjobs.core.clock import epoch_ms, utcnow
from flowjobs.core.context import StepContext
from flowjobs.core.errors import DataTooLarge, ExpressionError, FlowjobsError, HandlerNotFound
from flowjobs.core.expressions import ExpressionScope, reads_trigger_body, referenced_steps, resolve_inputs
from flowjobs.core.handlers import HandlerRegistry, StepResult
from flowjobs.core.job_calls import JobBooks, JobCall, failure_text, step_call, step_job_id
from flowjobs.core.limits import check_json_limits
from flowjobs.core.manifest import (
    FlowManifest,
    StepKind,
    StepMetadata,
    child_key,
    loop_index,
    split_runtime_key,
)
from flowjobs.core.outcomes import StepOutcome, StepReport
from flowjobs.core.planner import LoopProgress, advance_loop, open_iterations, plan
from flowjobs.core.polling import poll_verdict
from flowjobs.core.statuses import RunStatus, StepStatus
from flowjobs.deadline import step_deadline
from flowjobs.instruments import instruments
from flowjobs.leases import LeaseKeeper
from flowjobs.runtime.base import JobRunner
from flowjobs.runtime.current import job_books
from flowjobs.store.run_store import RunStore
from flowjobs.store.transitions import (
    AppliedPlan,
    Claim,
    ClaimRefusal,
    Continuation,
    LoopAdvance,
    NextAttempt,
    Park,
    Refused,
    RunSnapshot,
    Signalled,
    StateScope,
    StepDispatch,
    StepSkip,
    StoredStep,
)
from flowjobs.when import WhenGate, expression_scope

log = structlog.get_logger("flowjobs.engine")

#: What a handler's ``StepResult`` may say; Running or Skipped would leave the step unfinished.
_HANDLER_STATUSES = (StepStatus.Succeeded, StepStatus.Failed, StepStatus.Pending)

#: Plans refused as out of date before a continuation gives up (another process plans after it).
_MAX_REPLANS = 100

#: Due time of a parked step that waits with no timeout (recovery never finds it overdue).
NEVER = datetime(9999, 1, 1, tzinfo=UTC)


#: Why an attempt cut off by its worker's cold shutdown was handed over.
COLD_SHUTDOWN_REASON = "its worker was shut down cold (a second SIGTERM or Ctrl-C) during the attempt"


class ColdShutdown(SystemExit):
    """A worker's cold shutdown (a second Ctrl-C or SIGTERM), raised in the process running a
    handler; unlike a ``SystemExit`` of the handler's own, it ends the process."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, ready to be recorded."""

    status: StepStatus
    input_json: str | None = None
    output_json: str | None = None
    error: str | None = None
    delay_seconds: float = 0.0
    traceback: str | None = None
    """The handler's traceback, when it raised."""
    timed_out: bool = False
    """The handler ran past the step's timeout (counted in the metrics)."""


@contextmanager
def _handler_timer(flow: str) -> Iterator[None]:
    """Time a handler for this process's figures, whether it returns or raises."""
    started = time.monotonic()
    try:
        yield
    finally:
        instruments().handler_ran(flow, time.monotonic() - started)


def _flow_label(attempt: Attempt) -> str:
    """The attempt's flow as a metric label: its name, else its id."""
    run = attempt.claim.run
    return run.get("flow_name") or run.get("flow_id", "")


@dataclass(frozen=True)
class Attempt:
    """One claimed attempt of one step: what every stage of executing it works from."""

    run_id: str
    step_key: str
    step: StepMetadata
    number: int
    job_id: str | None
    claim: Claim
    books: JobBooks | None = None
    """The runner's bookkeeping of the attempt's job, left to the scripts (``job_books``)."""


@dataclass
class _Decisions:
    """One planning pass over a run: what to dispatch and skip, and which loops just finished."""

    dispatch: list[StepDispatch] = field(default_factory=list)
    skip: list[StepSkip] = field(default_factory=list)
    loops: list[LoopAdvance] = field(default_factory=list)
    finished_loops: list[tuple[str, int]] = field(default_factory=list)
    """(ForEach step, iteration count) of loops whose every iteration is final once this is applied."""
    close: RunStatus | None = None


class Engine:
    """The flow engine a worker runs; one per process, shared by every job it executes."""

    def __init__(
        self,
        store: RunStore,
        runner: JobRunner,
        handlers: HandlerRegistry,
        *,
        lease_seconds: float,
        worker_name: str | None = None,
        max_data_depth: int,
        max_data_bytes: int,
    ) -> None:
        self.store = store
        self.runner = runner
        self.handlers = handlers
        self.lease_seconds = lease_seconds
        self.max_data_depth = max_data_depth
        self.max_data_bytes = max_data_bytes
        self._trigger_readers: dict[int, bool] = {}
        self.leases = LeaseKeeper(store, lease_seconds)
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"

    # -- trigger job ---------------------------------------------------------------------------

    def start_run(
        self, run_id: str, job_id: str | None = None, flow: Mapping[str, str] | None = None
    ) -> RunStatus | None:
        """Run the trigger job: move the run to Running and dispatch its entry steps. ``flow``: the
        run's ``flow_id`` and ``flow_name``, when the caller knows them (else they are read).

        Safe to run again (at-least-once delivery): a Running run is only re-planned.
        """
        with (
            structlog.contextvars.bound_contextvars(run_id=run_id, job_id=job_id),
            tracing.run_span(run_id, job_id) as span,
        ):
            books = job_books(job_id)
            started = self.store.runs.start_run(
                run_id, span.trace, job=books.started() if books is not None else None, flow=flow
            )
            if started is None:
                log.warning("run.missing")
                return None
            before, state = started
            span.describe(state.run)
            status = RunStatus(state.run["status"])
            structlog.contextvars.bind_contextvars(flow_id=state.run.get("flow_id"))
            if before is RunStatus.Pending:
                log.info("run.started", flow_name=state.run.get("flow_name"))
            if status is RunStatus.Running:
                return self.continue_run(run_id, state)
            return status

    # -- step jobs -----------------------------------------------------------------------------

    def execute_step(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        job_id: str | None = None,
        manifest_hash: str | None = None,
    ) -> StepReport:
        """Run one attempt of one step: claim it, execute it, record the outcome, continue the run."""
        with tracing.step_span(run_id, step_key, attempt, job_id) as span:
            report = self._execute_step(run_id, step_key, attempt, job_id, manifest_hash)
            span.ended(report)
            return report

    def _execute_step(
        self, run_id: str, step_key: str, attempt: int, job_id: str | None, manifest_hash: str | None
    ) -> StepReport:
        with structlog.contextvars.bound_contextvars(
            run_id=run_id, step_key=step_key, attempt=attempt, job_id=job_id
        ):
            manifest = (
                self.store.flows.load_manifest(manifest_hash) if manifest_hash else self.manifest_of(run_id)
            )
            step = manifest.step(step_key) if manifest is not None else None
            if manifest is None or step is None:
                log.warning("step.unknown")
                return StepReport(StepOutcome.unknown)
            refs = self._references(manifest, step_key, step)
            loop_key, child = split_runtime_key(step_key)
            # The runner's bookkeeping of this job (RQ's start and end of it), left to the scripts.
            books = job_books(job_id)
            claim = self.store.runs.claim(
                run_id,
                step_key,
                attempt,
                job_id=job_id or "",
                worker=self.worker_name,
                lease_until=utcnow() + timedelta(seconds=self.lease_seconds),
                refs=sorted(set(refs.values())),
                loop_item_field=f"{loop_key}.{loop_index(step_key)}" if child is not None else None,
                with_trigger=self._reads_trigger_body(step),
                scope=_scope(manifest, step_key),
                job=books.started() if books is not None else None,
            )
            if isinstance(claim, Refused):
                log.info("step.claim_refused", reason=claim.reason.value, detail=claim.detail)
                return self._refused_claim(run_id, step_key, attempt, job_id, claim)
            structlog.contextvars.bind_contextvars(flow_id=claim.run.get("flow_id"))
            tracing.step_claimed(claim.run, step.type)
            log.debug("step.started", step_type=step.type)
            current = Attempt(run_id, step_key, step, attempt, job_id, claim, books)
            try:
                return self._execute(current, refs)
            except ColdShutdown:
                # A --simple worker's cold shutdown cut the handler off: hand the attempt over now
                # instead of leaving it to its lease (a forking worker's parent does the same).
                self.hand_over(run_id, step_key, attempt, reason=COLD_SHUTDOWN_REASON)
                raise
            except Exception as error:
                # flowjobs' own code failed around the handler (a value too deep to decode, a bug):
                # the attempt fails with the reason instead of staying Running until its lease
                # expires and being re-run by recovery.
                log.exception("step.engine_error")
                reason = f"flowjobs could not run the step: {type(error).__name__}: {error}"
                return self._record(current, Outcome(StepStatus.Failed, error=reason))

    def _refused_claim(
        self, run_id: str, step_key: str, attempt: int, job_id: str | None, refused: Refused[ClaimRefusal]
    ) -> StepReport:
        """A job whose attempt is not the step's current one. When it is the job of the step's latest
        attempt, which failed, and was queued again after that (rq-dashboard's Requeue), it asks for
        a retry, done as ``FlowClient.retry_step`` does. Any other such job is refused, saying why:
        among them a second copy of the attempt's job that recovery queued before the attempt ran."""
        fields = self.store.runs.step_fields(run_id, step_key)
        if (
            fields.get("status") == StepStatus.Failed
            and fields.get("attempt") == str(attempt)
            and _queued_after(job_id, fields.get("completed_at"))
        ):
            try:
                retried = retry_failed_step(self.store, self.runner, run_id, step_key, attempt=attempt)
            except FlowjobsError as error:
                return StepReport(StepOutcome(refused.reason.value), error=f"Requeue refused: {error}")
            log.info("step.requeued_as_retry", next_attempt=retried)
            return StepReport(StepOutcome.retried, error=f"Requeued failed attempt: attempt {retried} queued")
        why = (
            f"Refused: attempt {attempt} is not the step's current one (it is {refused.detail})"
            if refused.reason is ClaimRefusal.stale
            else f"Refused: the run is {refused.detail}"
        )
        return StepReport(StepOutcome(refused.reason.value), error=why)

    def _execute(self, attempt: Attempt, refs: Mapping[str, str]) -> StepReport:
        """Execute a claimed attempt by the step's kind and record its outcome."""
        claim = attempt.claim
        scope = expression_scope(
            claim.run,
            {name: claim.refs[key] for name, key in refs.items()},
            partial(self.store.runs.trigger_data_json, attempt.run_id),
        )
        if attempt.step.kind is StepKind.for_each:
            return self._expand_loop(attempt, scope)
        if attempt.step.kind is StepKind.wait_for_signal:
            return self._wait_for_signal(attempt, scope)
        with self.leases.holding(attempt.run_id, attempt.step_key, attempt.number):
            outcome = self._run_handler(attempt, scope)
        if attempt.step.poll is not None and outcome.status is StepStatus.Succeeded:
            outcome = self._poll(attempt, outcome)
        return self._record(attempt, outcome)

    def _reads_trigger_body(self, step: StepMetadata) -> bool:
        """Whether the step's inputs or items read ``@triggerBody()``: only then does its claim carry
        the trigger data (cached per step of a pinned manifest, which lives as long as the process)."""
        known = self._trigger_readers.get(id(step))
        if known is None:
            known = self._trigger_readers[id(step)] = reads_trigger_body([step.inputs, step.for_each])
        return known

    def _references(self, manifest: FlowManifest, step_key: str, step: StepMetadata) -> dict[str, str]:
        """Step names the step's expressions use → runtime keys (siblings inside a ForEach iteration)."""
        names = referenced_steps(step.inputs) | referenced_steps([step.for_each])
        return {name: manifest.reference_key(name, step_key) for name in names}

    def _inputs(self, attempt: Attempt, scope: ExpressionScope) -> Any:
        resolved = resolve_inputs(attempt.step.inputs, scope)
        index = loop_index(attempt.step_key)
        if index is not None:
            item_json = attempt.claim.loop_item_json
            item = json.loads(item_json) if item_json else None
            resolved = {**resolved, "__loopItem": item, "__loopIndex": index}
        return resolved

    def _run_handler(self, attempt: Attempt, scope: ExpressionScope) -> Outcome:
        step = attempt.step
        try:
            resolved = self._inputs(attempt, scope)
            input_json = json.dumps(resolved)
        except Exception as error:
            return Outcome(StepStatus.Failed, error=f"Inputs could not be resolved: {error}")
        try:
            registered = self.handlers.get(step.type)
        except HandlerNotFound as error:
            return Outcome(StepStatus.Failed, input_json, error=f"{error}.")
        inputs: Any = resolved
        if registered.input_model is not None:
            try:
                inputs = registered.input_model.model_validate(resolved)
            except ValidationError as error:
                name = registered.input_model.__name__
                return Outcome(StepStatus.Failed, input_json, error=f"Inputs do not match {name}: {error}")
        context = StepContext(
            run_id=UUID(attempt.run_id),
            flow_id=UUID(attempt.claim.run["flow_id"]),
            flow_name=attempt.claim.run.get("flow_name"),
            step_key=attempt.step_key,
            step_type=step.type,
            attempt=attempt.number,
            job_id=attempt.job_id,
            trigger_loader=lambda: scope.body,
            cancel_check=partial(self.store.runs.cancel_requested, attempt.run_id),
            trigger_headers=scope.trigger_headers,
            log=structlog.get_logger("flowjobs.step"),
        )
        limit = f"{step.timeout_seconds:g}s" if step.timeout_seconds else "the job timeout"
        timed_out = Outcome(
            StepStatus.Failed,
            input_json,
            error=f"Step timed out: the handler ran longer than {limit}.",
            timed_out=True,
        )
        started = time.monotonic()
        try:
            with step_deadline(step.timeout_seconds), _handler_timer(_flow_label(attempt)):
                returned = registered.fn(context, inputs)
        except JobTimeoutException:
            return timed_out
        except (Exception, SystemExit, KeyboardInterrupt) as error:
            # A handler's own ``sys.exit()`` or ``KeyboardInterrupt`` is its failure, not the
            # process's: left to propagate, it ends the work-horse (or a SimpleWorker) and the step
            # is taken for lost. A worker's cold shutdown is the process's, and goes on.
            if isinstance(error, ColdShutdown):
                raise
            tracing.handler_raised(error)
            log.warning("step.handler_raised", error=repr(error))
            return Outcome(
                StepStatus.Failed,
                input_json,
                error=f"{type(error).__name__}: {error}" if str(error) else type(error).__name__,
                traceback=traceback.format_exc(),
            )
        if step.timeout_seconds is not None and time.monotonic() - started > step.timeout_seconds:
            # A handler inside one long C call (a regex, a GIL-holding library) sees no signal
            # until it returns: its late result still counts as a timeout.
            return timed_out
        result = returned if isinstance(returned, StepResult) else StepResult.succeeded(returned)
        if result.status not in _HANDLER_STATUSES:
            return Outcome(
                StepStatus.Failed,
                input_json,
                error=f"Handler returned StepResult with status {result.status.value}; "
                "a handler may return Succeeded, Failed or Pending.",
            )
        try:
            output_json = self._output_json(result.output)
        except DataTooLarge as error:
            return Outcome(StepStatus.Failed, input_json, error=f"Handler output is too large: {error}")
        except (TypeError, ValueError) as error:
            return Outcome(
                StepStatus.Failed, input_json, error=f"Handler output is not JSON-serialisable: {error}"
            )
        return Outcome(result.status, input_json, output_json, result.error, result.delay_seconds)

    def _output_json(self, output: Any) -> str | None:
        """A handler's output as JSON, within the data limits (``DataTooLarge`` otherwise)."""
        if output is None:
            return None
        if isinstance(output, BaseModel):
            output = output.model_dump(mode="json")
        return check_json_limits(
            output, max_depth=self.max_data_depth, max_bytes=self.max_data_bytes, what="the output"
        )

    def _poll(self, attempt: Attempt, outcome: Outcome) -> Outcome:
        step = attempt.step
        assert step.poll is not None
        started = attempt.claim.first_started_at or utcnow()
        output = json.loads(outcome.output_json) if outcome.output_json else None
        verdict = poll_verdict(step.poll, output, attempt.number, (utcnow() - started).total_seconds())
        if verdict.failure is not None:
            return Outcome(StepStatus.Failed, outcome.input_json, outcome.output_json, verdict.failure)
        if verdict.again:
            return Outcome(
                StepStatus.Pending,
                outcome.input_json,
                outcome.output_json,
                delay_seconds=step.poll.interval_seconds,
            )
        return outcome

    def _record(self, attempt: Attempt, outcome: Outcome) -> StepReport:
        """Record an attempt's outcome: final (with the continuation planned ahead from the claim-time
        snapshot), or with the next attempt scheduled (retry or poll)."""
        run_id, step_key, seen = attempt.run_id, attempt.step_key, attempt.claim.snapshot
        instruments().step_executed(_flow_label(attempt), outcome.status.value)
        delay: float | None = None
        if outcome.status is StepStatus.Failed and attempt.step.retry is not None:
            delay = retry_delay(attempt.step.retry, attempt.number)
        elif outcome.status is StepStatus.Pending:
            delay = outcome.delay_seconds
        next_attempt = (
            self.next_attempt(
                run_id,
                step_key,
                attempt.number,
                due=utcnow() + timedelta(seconds=delay),
                event="step.pending" if outcome.status is StepStatus.Pending else "step.retried",
                message=f"attempt {attempt.number + 1} in {delay:g}s",
            )
            if delay is not None
            else None
        )
        ahead = self._plan_ahead(run_id, seen, step_key, outcome) if next_attempt is None else None
        # A final outcome ends the attempt's job too (as ``flowjobs.jobs.run_step`` then ends it).
        books = attempt.books if next_attempt is None else None
        failed = outcome.status is StepStatus.Failed
        ending = (
            books.ended(
                None if failed else outcome.output_json,
                failure_text(outcome.error, outcome.traceback) if failed else None,
            )
            if books is not None
            else None
        )
        completed = self.store.runs.complete(
            run_id,
            step_key,
            attempt.number,
            status=outcome.status,
            input_json=outcome.input_json,
            output_json=outcome.output_json,
            error=outcome.error,
            next_attempt=next_attempt,
            then=ahead[0] if ahead else None,
            scope=seen.scope,
            seen=seen,
            timed_out=outcome.timed_out,
            job=ending,
        )
        if not isinstance(completed, RunSnapshot):
            log.warning("step.completion_discarded", detail=str(completed))
            return StepReport(StepOutcome.discarded)
        if books is not None and ending is not None:
            books.ended_by_script()
        report = partial(
            StepReport,
            failed=failed,
            output_json=outcome.output_json,
            error=outcome.error,
            traceback=outcome.traceback,
        )
        if next_attempt is not None:
            if not self.schedule_attempt(run_id, step_key, next_attempt, completed):
                log.info("step.closed_with_run", status=completed.statuses[step_key].value)
                return report(StepOutcome.closed)
            log.info(
                next_attempt.event,
                error=outcome.error,
                next_attempt=next_attempt.attempt,
                delay_seconds=delay,
            )
            return report(StepOutcome.rescheduled)
        log.info(
            "step.completed" if outcome.status is StepStatus.Succeeded else "step.failed", error=outcome.error
        )
        if ahead is not None and completed.applied is not None:
            self._applied(ahead[0], ahead[1], completed.applied)
        else:
            self.continue_run(run_id, completed)
        return report(StepOutcome(outcome.status.value))

    @staticmethod
    def next_attempt(
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        due: datetime,
        event: str = "step.retried",
        message: str | None = None,
    ) -> NextAttempt:
        """The attempt after ``attempt`` of a step, due at ``due``, with its job id."""
        return NextAttempt(attempt + 1, step_job_id(run_id, step_key, attempt + 1), due, event, message)

    def schedule_attempt(
        self, run_id: str, step_key: str, next_attempt: NextAttempt, recorded: RunSnapshot
    ) -> bool:
        """Queue the job of a next attempt that ``complete`` recorded, to run when it is due.

        False, and nothing queued, when the run closed or its cancel was requested meanwhile
        (``complete`` made the step final instead); a run still Running is then cancelled and its
        continuation closes it once its last step is final. A step parked with no timeout (due
        ``NEVER``) gets no job: only its signal resumes it.
        """
        if recorded.statuses.get(step_key, StepStatus.Pending).is_final:
            if recorded.run.get("status") == RunStatus.Running:
                self.continue_run(run_id, recorded)
            return False
        if next_attempt.due != NEVER:
            call = self.attempt_call(run_id, recorded.run, step_key, next_attempt.attempt)
            self.runner.schedule(call, next_attempt.due - utcnow())
        return True

    def end_attempt(
        self,
        run_id: str,
        step_key: str,
        attempt: int,
        *,
        error: str,
        next_attempt: NextAttempt | None,
        lease_expired_before: datetime | None = None,
        crashed: bool = False,
    ) -> RunSnapshot | None:
        """Record an attempt that ended outside its handler (its worker lost, its work-horse crashed,
        its worker shut down) as Failed with ``error``, then queue ``next_attempt`` or, without one,
        plan what follows the failed step. None, and nothing done, when the attempt is no longer the
        step's running one (fenced by its number, as every completion)."""
        completed = self.store.runs.complete(
            run_id,
            step_key,
            attempt,
            status=StepStatus.Failed,
            error=error,
            next_attempt=next_attempt,
            lease_expired_before=lease_expired_before,
            crashed=crashed,
        )
        if not isinstance(completed, RunSnapshot):
            return None
        if next_attempt is None:
            log.warning("step.failed", run_id=run_id, step_key=step_key, attempt=attempt, error=error)
            self.continue_run(run_id, completed)
        else:
            # Queues nothing if the run closed meanwhile: the step failed for good, no new attempt.
            self.schedule_attempt(run_id, step_key, next_attempt, completed)
        return completed

    def record_crash(self, run_id: str, step_key: str, attempt: int, *, cause: str, max_crashes: int) -> bool:
        """Fail a claimed attempt whose work-horse died under it while its worker lived (a segfault,
        ``os._exit``, the OOM killer): the step's doing. The step's ``retry`` applies as for a
        handler that raised, until the step crashed ``max_crashes`` times; then it fails for good.
        False when the attempt had ended (or was never claimed) before its work-horse died."""
        fields = self.store.runs.step_fields(run_id, step_key)
        if not _claimed(fields, attempt):
            return False
        manifest = self.manifest_of(run_id)
        step = manifest.step(step_key) if manifest is not None else None
        crashes = int(fields.get("crashed_attempts", "0")) + 1  # complete.lua counts this one
        delay = retry_delay(step.retry, attempt) if step is not None and step.retry is not None else None
        error = f"{cause} (crash {crashes} of at most {max_crashes})."
        if crashes >= max_crashes:
            delay = None
            error = f"{cause}: the step crashed its work-horse {crashes} times; not retried."
        next_attempt = (
            self.next_attempt(
                run_id,
                step_key,
                attempt,
                due=utcnow() + timedelta(seconds=delay),
                message=f"work-horse crashed; attempt {attempt + 1} in {delay:g}s",
            )
            if delay is not None
            else None
        )
        log.warning(
            "step.work_horse_crashed",
            run_id=run_id,
            step_key=step_key,
            attempt=attempt,
            job_id=fields.get("job_id"),
            cause=cause,
            crashes=crashes,
        )
        return (
            self.end_attempt(run_id, step_key, attempt, error=error, next_attempt=next_attempt, crashed=True)
            is not None
        )

    def hand_over(self, run_id: str, step_key: str, attempt: int, *, reason: str) -> bool:
        """Release a claimed attempt its worker cut off while shutting down (not the step's doing,
        nor a lost worker): recorded Failed with ``reason`` and the next attempt queued at once,
        counted neither as lost nor as a crash. False when the attempt had ended already."""
        fields = self.store.runs.step_fields(run_id, step_key)
        if not _claimed(fields, attempt):
            return False
        next_attempt = self.next_attempt(
            run_id,
            step_key,
            attempt,
            due=utcnow(),
            message=f"attempt {attempt} handed over ({reason}); attempt {attempt + 1} dispatched",
        )
        log.warning(
            "step.handed_over", run_id=run_id, step_key=step_key, attempt=attempt, job_id=fields.get("job_id")
        )
        error = f"Handed over: {reason}."
        return self.end_attempt(run_id, step_key, attempt, error=error, next_attempt=next_attempt) is not None

    # -- built-in kinds ------------------------------------------------------------------------

    def _expand_loop(self, attempt: Attempt, scope: ExpressionScope) -> StepReport:
        """ForEach: resolve the items, record them and start the first iterations."""
        try:
            items = resolve_inputs(attempt.step.for_each, scope)
        except ExpressionError as error:
            items = error
        if not isinstance(items, list):
            reason = (
                f"for_each could not be resolved: {items}"
                if isinstance(items, ExpressionError)
                else f"for_each did not resolve to a list (got {type(items).__name__})"
            )
            return self._record(attempt, Outcome(StepStatus.Failed, error=reason))
        input_json = json.dumps({"for_each": items})
        if not items:
            return self._record(attempt, Outcome(StepStatus.Succeeded, input_json, "[]"))
        manifest = self.store.flows.load_manifest(attempt.claim.run["manifest_hash"])
        expanded = self.store.runs.expand_loop(
            attempt.run_id,
            attempt.step_key,
            attempt.number,
            items=items,
            input_json=input_json,
            scope=StateScope(tuple(manifest.steps), loop=attempt.step_key),
        )
        if isinstance(expanded, Refused):
            log.warning("step.completion_discarded", detail=expanded.detail)
            return StepReport(StepOutcome.discarded)
        log.info("loop.expanded", iterations=len(items), concurrency_limit=attempt.step.concurrency_limit)
        self.continue_run(attempt.run_id, expanded)
        return StepReport(StepOutcome.expanded)

    def _wait_for_signal(self, attempt: Attempt, scope: ExpressionScope) -> StepReport:
        """WaitForSignal: park as Pending (no worker held) until the signal or the timeout resumes it."""
        run_id, step_key = attempt.run_id, attempt.step_key
        inputs = resolve_inputs(attempt.step.inputs, scope)
        name = inputs.get("signalName")
        input_json = json.dumps(inputs)
        if not isinstance(name, str) or not name.strip():
            # A missing field or an object would otherwise park the step under "None" or "{...}",
            # a name no one means to signal: it would wait forever.
            error = f"signalName resolved to {json.dumps(name)}; a signal name must be a non-empty string."
            return self._record(attempt, Outcome(StepStatus.Failed, input_json, error=error))
        timeout = inputs.get("timeoutSeconds")
        started = attempt.claim.first_started_at or utcnow()
        expires = started + timedelta(seconds=float(timeout)) if timeout else None
        if expires is not None and utcnow() >= expires:
            record = self.store.signals.signal_record(run_id, name) or {}
            outcome = (
                Outcome(StepStatus.Succeeded, input_json, record.get("payload_json") or "null")
                if record.get("delivered_at")
                else Outcome(
                    StepStatus.Failed,
                    input_json,
                    error=f"Signal {name!r} was not received within {timeout:g}s.",
                )
            )
            return self._record(attempt, outcome)
        resume = self.next_attempt(
            run_id,
            step_key,
            attempt.number,
            due=expires or NEVER,
            event="step.pending",
            message=f"waiting for signal {name!r}",
        )
        parked = self.store.runs.complete(
            run_id,
            step_key,
            attempt.number,
            status=StepStatus.Pending,
            input_json=input_json,
            next_attempt=resume,
            park=Park(name, expires),
            scope=attempt.claim.snapshot.scope,
        )
        if isinstance(parked, Signalled):
            return self._record(attempt, Outcome(StepStatus.Succeeded, input_json, parked.payload_json))
        if isinstance(parked, Refused):
            log.warning("step.completion_discarded", detail=parked.detail)
            return StepReport(StepOutcome.discarded)
        if not self.schedule_attempt(run_id, step_key, resume, parked):
            return StepReport(StepOutcome.closed)
        log.info("step.parked", signal=name, expires_at=expires.isoformat() if expires else None)
        return StepReport(StepOutcome.parked)

    # -- continuation --------------------------------------------------------------------------

    def continue_run(self, run_id: str, state: RunSnapshot) -> RunStatus | None:
        """Plan the run from a snapshot: dispatch ready steps (ForEach children included), skip
        blocked ones, advance and finish loops, and close the run.

        A plan is applied only if nothing that can change it happened since the snapshot was
        read; otherwise the store hands back a fresh snapshot of the same scope and the run is
        planned again, so every applied plan saw every outcome recorded before it.
        """
        manifest_hash = state.run.get("manifest_hash")
        if manifest_hash is None:
            return None
        manifest = self.store.flows.load_manifest(manifest_hash)
        for _ in range(_MAX_REPLANS):
            decisions = self._decide(run_id, manifest, state)
            continuation, calls = self._continuation(run_id, manifest, state, decisions)
            applied = self.store.runs.apply_plan(run_id, continuation)
            if isinstance(applied, RunSnapshot):
                state = applied
                continue
            status = self._applied(continuation, calls, applied)
            if not decisions.finished_loops or status is not RunStatus.Running:
                return status
            finished = self._finish_loops(run_id, manifest, decisions.finished_loops)
            if finished is None:
                return status
            state = finished
        # Every refusal means another process recorded something and plans after it; recovery's
        # idle-run duty is the net under that.
        log.warning("run.replanning_gave_up", tries=_MAX_REPLANS)
        return None

    def _plan_ahead(
        self, run_id: str, seen: RunSnapshot, step_key: str, outcome: Outcome
    ) -> tuple[Continuation, dict[str, JobCall]] | None:
        """The continuation that follows this outcome if nothing else changes before it is recorded,
        so ``complete`` can apply it in the same round-trip (it checks the snapshot's version)."""
        manifest = self.store.flows.load_manifest(seen.run["manifest_hash"])
        predicted = replace(seen, statuses={**seen.statuses, step_key: outcome.status})
        own = StoredStep(outcome.status, outcome.output_json, outcome.error)
        decisions = self._decide(run_id, manifest, predicted, {step_key: own})
        if decisions.finished_loops:
            return None
        return self._continuation(run_id, manifest, seen, decisions)

    def _continuation(
        self,
        run_id: str,
        manifest: FlowManifest,
        state: RunSnapshot,
        decisions: _Decisions,
    ) -> tuple[Continuation, dict[str, JobCall]]:
        calls = {d.step_key: self.attempt_call(run_id, state.run, d.step_key, 1) for d in decisions.dispatch}
        commands = self.runner.enqueue_commands(list(calls.values())) if calls else None
        continuation = Continuation(
            dispatch=decisions.dispatch,
            skip=decisions.skip,
            close=decisions.close,
            required=list(manifest.steps),
            job_commands=dict(zip(calls, commands, strict=True)) if commands is not None else {},
            version=state.version,
            loops=decisions.loops,
            scope=state.scope,
        )
        return continuation, calls

    def _applied(
        self, continuation: Continuation, calls: Mapping[str, JobCall], applied: AppliedPlan
    ) -> RunStatus | None:
        """Enqueue what was dispatched unless the script already did, and log the outcome."""
        if applied.dispatched and not continuation.job_commands:
            self.runner.enqueue_many([calls[key] for key in applied.dispatched])
        if applied.dispatched:
            log.debug("steps.dispatched", steps=applied.dispatched)
        for skipped in continuation.skip:
            log.info("step.skipped", skipped_step=skipped.step_key, reason=skipped.reason)
        if applied.closed is not None:
            log.info("run.completed", status=applied.closed.value)
        return applied.run_status

    def _decide(
        self,
        run_id: str,
        manifest: FlowManifest,
        state: RunSnapshot,
        known: Mapping[str, StoredStep] | None = None,
    ) -> _Decisions:
        """One planning pass; ``known`` are step views not recorded yet (the outcome being recorded)."""
        traces: dict[str, str] = {}
        gate = WhenGate(self.store, run_id, manifest, state.run, traces, known)
        decisions = _Decisions()
        top = plan(manifest.dependency_graph(), state.statuses, gate.admit(None, None))
        ready, skipped = list(top.ready), dict(top.skipped)
        for loop_key, progress in state.loops.items():
            loop = manifest.steps.get(loop_key)
            if loop is None or state.statuses.get(loop_key) is not StepStatus.Running:
                continue
            children = loop.dependency_graph()
            iterations: dict[int, dict[str, StepStatus]] = {}
            if state.scope is None:
                # The whole run: every started iteration, counted afresh.
                started, iterations = open_iterations(loop_key, children, state.statuses)
                progress = LoopProgress(progress.count, started)
            elif state.scope.loop == loop_key and state.scope.index is not None and not state.iteration_final:
                index = state.scope.index
                own = {child: state.statuses.get(child_key(loop_key, index, child)) for child in children}
                iterations = {index: {child: status for child, status in own.items() if status is not None}}
            advanced = advance_loop(
                loop_key,
                children,
                loop.concurrency_limit,
                progress,
                iterations,
                partial(gate.admit, loop_key),
            )
            ready.extend(advanced.ready)
            skipped.update(advanced.skipped)
            decisions.loops.append(LoopAdvance(loop_key, advanced.progress.started, advanced.finals))
            if advanced.finished:
                decisions.finished_loops.append((loop_key, progress.count))
        for key in ready:
            decisions.dispatch.append(StepDispatch(key, _type(manifest, key), 1, step_job_id(run_id, key, 1)))
        for key, reason in skipped.items():
            decisions.skip.append(StepSkip(key, _type(manifest, key), reason, traces.get(key)))
        decisions.close = top.outcome
        return decisions

    def _finish_loops(
        self, run_id: str, manifest: FlowManifest, finished: list[tuple[str, int]]
    ) -> RunSnapshot | None:
        """Record each finished ForEach step from its iterations' recorded outcomes (once: the loser
        of a race is refused and stops)."""
        latest: RunSnapshot | None = None
        for loop_key, count in finished:
            recorded = self.store.runs.loop_outcomes(run_id, loop_key, count)
            outcomes = [outcome for outcome in recorded if outcome is not None]
            if len(outcomes) != count:
                log.warning("loop.outcomes_missing", loop=loop_key, recorded=len(outcomes), iterations=count)
                continue
            fields = self.store.runs.step_fields(run_id, loop_key)
            # An iteration skipped by its When clauses filtered its item out; only failures fail the loop.
            failed = sum(outcome is RunStatus.Failed for outcome in outcomes)
            output = [{"index": index, "status": outcome.value} for index, outcome in enumerate(outcomes)]
            done = self.store.runs.complete(
                run_id,
                loop_key,
                int(fields.get("attempt", "1")),
                status=StepStatus.Failed if failed else StepStatus.Succeeded,
                output_json=json.dumps(output),
                error=f"{failed} of {count} iterations failed." if failed else None,
                scope=StateScope(tuple(manifest.steps)),
            )
            if isinstance(done, RunSnapshot):
                log.info("loop.finished", loop=loop_key, iterations=count, failed=failed)
                latest = done
        return latest

    def attempt_call(
        self, run_id: str, run_fields: Mapping[str, str], step_key: str, attempt: int
    ) -> JobCall:
        """The job of one attempt of one step of this run, with the step's timeout from the manifest
        the run is pinned to."""
        step = self.store.flows.load_manifest(run_fields["manifest_hash"]).step(step_key)
        return step_call(run_id, run_fields, step_key, attempt, step.timeout_seconds if step else None)

    def preload_manifest(self, manifest_hash: str) -> None:
        """Load a pinned manifest into this process's cache ahead of the step jobs that name it: a
        forking worker's parent does, so that its work-horses inherit it instead of each reading
        and parsing it again."""
        with suppress(LookupError):
            self.store.flows.load_manifest(manifest_hash)

    def manifest_of(self, run_id: str) -> FlowManifest | None:
        """The manifest a run is pinned to, or None if there is no such run."""
        manifest_hash = self.store.runs.manifest_hash_of(run_id)
        return self.store.flows.load_manifest(manifest_hash) if manifest_hash else None


def _type(manifest: FlowManifest, runtime_key: str) -> str:
    step = manifest.step(runtime_key)
    assert step is not None, runtime_key  # the planner only returns keys of the manifest
    return step.type


def _scope(manifest: FlowManifest, step_key: str) -> StateScope:
    """What planning after this step needs: the top-level steps, and for a ForEach child its
    iteration's children and its loop's counters — never the other iterations."""
    top = tuple(manifest.steps)
    loop_key, child = split_runtime_key(step_key)
    index = loop_index(step_key)
    if child is None or index is None:
        return StateScope(top)
    children = tuple(child_key(loop_key, index, name) for name in manifest.steps[loop_key].steps)
    return StateScope(top + children, loop_key, index)


def _claimed(step_fields: Mapping[str, str], attempt: int) -> bool:
    """Whether ``attempt`` is the step's running attempt and still holds its claim (a ForEach step
    stays Running without one while its iterations run)."""
    return (
        step_fields.get("status") == StepStatus.Running
        and step_fields.get("attempt") == str(attempt)
        and "lease_until_ms" in step_fields
    )


def _queued_after(job_id: str | None, completed_ms: str | None) -> bool:
    """Whether the RQ job running now (``job_id``) was queued at or after ``completed_ms`` (epoch ms).

    RQ stamps ``enqueued_at`` at every enqueue, a requeue included; recovery queues a copy of an
    attempt's job only while the attempt is still unclaimed (``recovery._requeue``), so before it
    ends. False when this is not an RQ job or either time is unknown: never retry on a guess.
    """
    job = rq.get_current_job()
    if job is None or job.id != job_id or job.enqueued_at is None or not completed_ms:
        return False
    return epoch_ms(job.enqueued_at) >= int(completed_ms)
