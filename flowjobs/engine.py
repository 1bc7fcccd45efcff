"""Executes runs: starts them, runs step attempts, plans continuations and recovers lost work.

Data flows one way: a job (from the runner) calls the engine; the engine records through the
store, decides with the planner, and hands new jobs to the runner.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from pydantic import BaseModel, ValidationError
from rq.timeouts import JobTimeoutException

from flowjobs.backoff import retry_delay
from flowjobs.clock import iso, utcnow
from flowjobs.context import StepContext
from flowjobs.errors import HandlerNotFound
from flowjobs.expressions import ExpressionScope, referenced_steps, resolve_inputs
from flowjobs.expressions import StepView as ExpressionStepView
from flowjobs.handlers import HandlerRegistry, StepResult
from flowjobs.jobs import step_call, trigger_call
from flowjobs.manifest import FlowManifest, StepMetadata
from flowjobs.planner import plan
from flowjobs.runtime.base import JobCall, JobRunner, JobState, step_job_id
from flowjobs.statuses import RunStatus, StepStatus
from flowjobs.store import Claim, Completion, NextAttempt, Refused, RunStore, StepDispatch, StepSkip

log = structlog.get_logger("flowjobs.engine")


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, ready to be recorded."""

    status: StepStatus
    input_json: str | None = None
    output_json: str | None = None
    error: str | None = None
    delay_seconds: float = 0.0


class Engine:
    """The flow engine a worker runs; one per process, shared by every job it executes."""

    def __init__(
        self,
        store: RunStore,
        runner: JobRunner,
        handlers: HandlerRegistry,
        *,
        lease_seconds: float = 30.0,
        worker_name: str | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.handlers = handlers
        self.lease_seconds = lease_seconds
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"

    # -- trigger job ---------------------------------------------------------------------------

    def start_run(self, run_id: str, job_id: str | None = None) -> RunStatus | None:
        """Run the trigger job: move the run to Running and dispatch its entry steps.

        Safe to run again (at-least-once delivery): a Running run is only re-planned.
        """
        with structlog.contextvars.bound_contextvars(run_id=run_id, job_id=job_id):
            started = self.store.start_run(run_id)
            if started is None:
                log.warning("run.missing")
                return None
            before, state = started
            status = RunStatus(state.run["status"])
            structlog.contextvars.bind_contextvars(flow_id=state.run.get("flow_id"))
            if before is RunStatus.Pending:
                log.info("run.started", flow_name=state.run.get("flow_name"))
            if status is RunStatus.Running:
                return self.continue_run(run_id, state)
            return status

    # -- step jobs -----------------------------------------------------------------------------

    def execute_step(self, run_id: str, step_key: str, attempt: int, job_id: str | None = None) -> str:
        """Run one attempt of one step: claim it, call its handler, record the outcome, continue."""
        with structlog.contextvars.bound_contextvars(
            run_id=run_id, step_key=step_key, attempt=attempt, job_id=job_id
        ):
            manifest = self._manifest_of(run_id)
            if manifest is None:
                log.warning("step.run_missing")
                return "run_missing"
            step = manifest.steps.get(step_key)
            if step is None:
                log.error("step.not_in_manifest")
                return "not_in_manifest"
            claim = self.store.claim(
                run_id,
                step_key,
                attempt,
                job_id=job_id or "",
                worker=self.worker_name,
                lease_until=utcnow() + timedelta(seconds=self.lease_seconds),
                refs=sorted(referenced_steps(step.inputs)),
            )
            if isinstance(claim, Refused):
                log.info("step.claim_refused", reason=claim.reason, detail=claim.detail)
                return claim.reason
            structlog.contextvars.bind_contextvars(flow_id=claim.run.get("flow_id"))
            log.info("step.started", step_type=step.type)
            with self._lease(run_id, step_key, attempt):
                outcome = self._run_handler(run_id, step_key, step, attempt, job_id, claim)
            return self._record(run_id, step_key, step, attempt, outcome, claim.run)

    def _run_handler(
        self, run_id: str, step_key: str, step: StepMetadata, attempt: int, job_id: str | None, claim: Claim
    ) -> Outcome:
        trigger_data = (
            json.loads(claim.run["trigger_data_json"]) if "trigger_data_json" in claim.run else None
        )
        headers: dict[str, str] = json.loads(claim.run.get("trigger_headers", "{}"))
        scope = ExpressionScope(
            trigger_body=trigger_data,
            trigger_headers=headers,
            steps={
                key: ExpressionStepView(
                    status=view.status.value if view.status else None,
                    output=json.loads(view.output_json) if view.output_json else None,
                    error=view.error,
                )
                for key, view in claim.refs.items()
            },
        )
        try:
            resolved = resolve_inputs(step.inputs, scope)
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
                return Outcome(
                    StepStatus.Failed,
                    input_json,
                    error=f"Inputs do not match {registered.input_model.__name__}: {error}",
                )
        context = StepContext(
            run_id=UUID(run_id),
            flow_id=UUID(claim.run["flow_id"]),
            flow_name=claim.run.get("flow_name"),
            step_key=step_key,
            step_type=step.type,
            attempt=attempt,
            job_id=job_id,
            trigger_data=trigger_data,
            trigger_headers=headers,
            log=structlog.get_logger("flowjobs.step"),
        )
        try:
            returned = registered.fn(context, inputs)
        except JobTimeoutException:
            return Outcome(
                StepStatus.Failed,
                input_json,
                error=f"Step timed out after timeout_seconds={step.timeout_seconds:g}.",
            )
        except Exception as error:
            log.warning("step.handler_raised", error=repr(error))
            return Outcome(StepStatus.Failed, input_json, error=f"{type(error).__name__}: {error}")
        result = returned if isinstance(returned, StepResult) else StepResult.succeeded(returned)
        try:
            output_json = _output_json(result.output)
        except (TypeError, ValueError) as error:
            return Outcome(
                StepStatus.Failed, input_json, error=f"Handler output is not JSON-serialisable: {error}"
            )
        return Outcome(result.status, input_json, output_json, result.error, result.delay_seconds)

    def _record(
        self,
        run_id: str,
        step_key: str,
        step: StepMetadata,
        attempt: int,
        outcome: Outcome,
        run_fields: Mapping[str, str],
    ) -> str:
        next_attempt: NextAttempt | None = None
        delay: float | None = None
        if outcome.status is StepStatus.Failed and step.retry is not None:
            delay = retry_delay(step.retry, attempt)
        elif outcome.status is StepStatus.Pending:
            delay = outcome.delay_seconds
        if delay is not None:
            next_attempt = NextAttempt(
                attempt=attempt + 1,
                job_id=step_job_id(run_id, step_key, attempt + 1),
                due=utcnow() + timedelta(seconds=delay),
                event="step.pending" if outcome.status is StepStatus.Pending else "step.retried",
                message=f"attempt {attempt + 1} in {delay:g}s",
            )
        completed = self.store.complete(
            run_id,
            step_key,
            attempt,
            status=outcome.status,
            input_json=outcome.input_json,
            output_json=outcome.output_json,
            error=outcome.error,
            next_attempt=next_attempt,
        )
        if isinstance(completed, Refused):
            log.warning("step.completion_discarded", reason=completed.reason, detail=completed.detail)
            return "discarded"
        if next_attempt is not None:
            log.info(
                "step.retried" if outcome.status is StepStatus.Failed else "step.pending",
                error=outcome.error,
                next_attempt=next_attempt.attempt,
                delay_seconds=delay,
            )
            self.runner.schedule(
                self._step_call(run_id, run_fields, step_key, step, next_attempt.attempt),
                timedelta(seconds=delay or 0),
            )
            return "rescheduled"
        event = "step.completed" if outcome.status is StepStatus.Succeeded else "step.failed"
        log.info(event, error=outcome.error)
        self.continue_run(run_id, completed)
        return outcome.status.value

    # -- continuation --------------------------------------------------------------------------

    def continue_run(self, run_id: str, state: Completion) -> RunStatus | None:
        """Plan the run from its step statuses: dispatch ready steps, skip blocked ones, close it."""
        run_fields = state.run
        manifest = self.store.load_manifest(run_fields["manifest_hash"])
        graph = manifest.dependency_graph()
        decision = plan(graph, state.statuses)
        dispatch = [
            StepDispatch(key, manifest.steps[key].type, 1, step_job_id(run_id, key, 1))
            for key in decision.ready
        ]
        skip = [StepSkip(key, manifest.steps[key].type, reason) for key, reason in decision.skipped.items()]
        applied = self.store.apply_plan(
            run_id, dispatch=dispatch, skip=skip, close=decision.outcome, required=list(graph)
        )
        if applied.dispatched:
            calls = [
                self._step_call(run_id, run_fields, d.step_key, manifest.steps[d.step_key], 1)
                for d in dispatch
                if d.step_key in applied.dispatched
            ]
            self.runner.enqueue_many(calls)
            log.info("steps.dispatched", steps=applied.dispatched)
        for key in decision.skipped:
            log.info("step.skipped", skipped_step=key)
        if applied.closed is not None:
            log.info("run.completed", status=applied.closed.value)
        return applied.run_status

    def _step_call(
        self,
        run_id: str,
        run_fields: Mapping[str, str],
        step_key: str,
        step: StepMetadata,
        attempt: int,
    ) -> JobCall:
        return step_call(
            run_id,
            run_fields.get("flow_id"),
            run_fields.get("flow_name"),
            step_key,
            attempt,
            step.timeout_seconds,
        )

    # -- leases and recovery -------------------------------------------------------------------

    @contextmanager
    def _lease(self, run_id: str, step_key: str, attempt: int) -> Iterator[None]:
        """Renew the claim's lease in the background while the handler runs."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_seconds / 3):
                lease_until = utcnow() + timedelta(seconds=self.lease_seconds)
                if not self.store.renew(run_id, step_key, attempt, lease_until):
                    return

        thread = threading.Thread(target=renew, name=f"flowjobs-lease-{step_key}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()

    def recover(self, *, grace_seconds: float | None = None) -> int:
        """Re-dispatch lost work (at-least-once) and close finished runs; returns how many things it fixed.

        A claimed step whose lease expired gets a new attempt; a dispatched step whose RQ job
        is gone (or ended without claiming it) is re-queued; a Running run with nothing in
        flight is re-planned, which closes it when every step is final.
        """
        grace = timedelta(seconds=self.lease_seconds if grace_seconds is None else grace_seconds)
        now = utcnow()
        fixed = 0
        for run_id, step_key in self.store.expired_leases(now):
            fixed += self._recover_expired_claim(run_id, step_key, now)
        for run_id, step_key in self.store.overdue_pending(now - grace):
            fixed += self._recover_lost_job(run_id, step_key)
        for run_id in self.store.active_run_ids():
            fixed += self._recover_run(run_id, now - grace)
        return fixed

    def _recover_expired_claim(self, run_id: str, step_key: str, now: datetime) -> int:
        fields = self.store.step_fields(run_id, step_key)
        if fields.get("status") != StepStatus.Running or "attempt" not in fields:
            return 0
        attempt = int(fields["attempt"])
        manifest = self._manifest_of(run_id)
        if manifest is None or step_key not in manifest.steps:
            return 0
        next_attempt = NextAttempt(
            attempt=attempt + 1,
            job_id=step_job_id(run_id, step_key, attempt + 1),
            due=now,
            message=f"claim lease of attempt {attempt} expired; attempt {attempt + 1} dispatched",
        )
        completed = self.store.complete(
            run_id,
            step_key,
            attempt,
            status=StepStatus.Failed,
            error=f"Claim lease expired: the worker executing attempt {attempt} was lost.",
            next_attempt=next_attempt,
            lease_expired_before=now,
        )
        if isinstance(completed, Refused):
            return 0
        log.warning("step.lease_expired", run_id=run_id, step_key=step_key, attempt=attempt)
        self.runner.enqueue(
            self._step_call(run_id, completed.run, step_key, manifest.steps[step_key], attempt + 1)
        )
        return 1

    def _recover_lost_job(self, run_id: str, step_key: str) -> int:
        fields = self.store.step_fields(run_id, step_key)
        job_id = fields.get("job_id")
        if fields.get("status") != StepStatus.Pending or not job_id:
            return 0
        if self.runner.state(job_id) in (JobState.Enqueued, JobState.Scheduled):
            return 0
        manifest = self._manifest_of(run_id)
        run_fields = self.store.run_fields(run_id)
        if manifest is None or step_key not in manifest.steps:
            return 0
        log.warning("step.job_lost", run_id=run_id, step_key=step_key, job_id=job_id)
        self.runner.enqueue(
            self._step_call(run_id, run_fields, step_key, manifest.steps[step_key], int(fields["attempt"]))
        )
        return 1

    def _recover_run(self, run_id: str, started_before: datetime) -> int:
        run_fields = self.store.run_fields(run_id)
        if run_fields.get("started_at", "") >= iso(started_before):
            return 0
        status = run_fields.get("status")
        if status == RunStatus.Pending:
            job_id = run_fields.get("background_job_id")
            if not job_id or self.runner.state(job_id) in (JobState.Enqueued, JobState.Scheduled):
                return 0
            log.warning("run.trigger_job_lost", run_id=run_id, job_id=job_id)
            self.runner.enqueue(trigger_call(run_id, run_fields["flow_id"], run_fields.get("flow_name")))
            return 1
        if status != RunStatus.Running:
            return 0
        statuses = self.store.step_statuses(run_id)
        if any(not s.is_final for s in statuses.values()):
            return 0
        after = self.continue_run(run_id, Completion(statuses=statuses, run=run_fields))
        return int(after is not RunStatus.Running)

    def _manifest_of(self, run_id: str) -> FlowManifest | None:
        manifest_hash = self.store.manifest_hash_of(run_id)
        return self.store.load_manifest(manifest_hash) if manifest_hash else None


def _output_json(output: Any) -> str | None:
    if output is None:
        return None
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    return json.dumps(output, allow_nan=False)
