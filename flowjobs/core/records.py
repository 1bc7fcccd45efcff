"""What a run is: the run record, step records, attempts and events, as stored and as the API shows them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from flowjobs.core.statuses import RunStatus, StepStatus


class _Record(BaseModel):
    """Records: snake_case in Python, camelCase in JSON (``model_dump(by_alias=True)``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class _StepFields(_Record):
    """What a step record and an attempt record both say."""

    run_id: UUID
    """The run."""
    step_key: str
    """Runtime key of the step (``<loop>.<i>.<child>`` inside a ForEach)."""
    step_type: str
    """Handler type name."""
    status: StepStatus
    """Pending, Running, Succeeded, Failed or Skipped."""
    input_json: str | None = None
    """Resolved inputs, as JSON."""
    output_json: str | None = None
    """Output, as JSON."""
    error_message: str | None = None
    """Failure or skip reason."""
    job_id: str | None = None
    """RQ job of the (latest) attempt."""
    started_at: datetime | None = None
    """When a worker claimed the (latest) attempt."""
    completed_at: datetime | None = None
    """When the outcome was recorded."""


class FlowStepAttemptRecord(_StepFields):
    """One execution of a step: each retry, each poll, each park and resume."""

    attempt: int
    """1-based attempt number; also the fencing token of its claim."""


class FlowStepRecord(_StepFields):
    """Latest state of one step in one run."""

    dispatched_at: datetime | None = None
    """When the latest attempt was put in the dispatch ledger (queued or scheduled)."""
    attempt_count: int = 0
    """Attempts dispatched so far."""
    attempts: list[FlowStepAttemptRecord] | None = None
    """Every attempt, oldest first; only filled by ``get_run_detail``."""
    evaluation_trace_json: str | None = None
    """``{expression, resolved, result}`` when a When clause skipped the step."""


class FlowRunRecord(_Record):
    """One execution of a flow (the seed's record, plus its pinned manifest and run control)."""

    id: UUID
    """Unique id of the run, generated at trigger time."""
    flow_id: UUID
    """The flow this run belongs to."""
    flow_name: str | None = None
    """Display name of the flow when the run started."""
    status: RunStatus
    """Pending, Running, Succeeded, Failed, Skipped, Cancelled or TimedOut."""
    trigger_key: str | None = None
    """Manifest key of the trigger that started the run."""
    trigger_data_json: str | None = None
    """JSON of the trigger payload, kept for audit and re-run."""
    trigger_headers: dict[str, str] | None = None
    """Trigger headers with sensitive ones removed."""
    background_job_id: str | None = None
    """Id of the RQ job that executed the trigger; always set in flowjobs."""
    started_at: datetime
    """When the run was created."""
    completed_at: datetime | None = None
    """When the run reached a terminal status; None while active."""
    source_run_id: UUID | None = None
    """For re-runs: the run this one was re-run from."""
    steps: list[FlowStepRecord] | None = None
    """Only filled by ``get_run_detail``."""
    flow_version: str | None = None
    """Version label of the flow when the run started."""
    manifest_hash: str | None = None
    """Content hash of the manifest the run is planned against to its end."""
    idempotency_key: str | None = None
    """Idempotency key the run was triggered with."""
    timeout_at: datetime | None = None
    """Run deadline, if any."""
    cancel_requested: bool = False
    """Whether cancellation was requested."""
    cancel_reason: str | None = None
    """Why cancellation was requested."""
    cancel_requested_at: datetime | None = None
    """When cancellation was requested."""
    traceparent: str | None = None
    """W3C traceparent of the run's span (``flowjobs.tracing``), set when its trigger job starts
    the run under a valid span context; every step job carries it. Before that (or if the worker
    traces nothing), the caller's trace context, if any: a trigger job queued again by recovery
    starts under it."""
    tracestate: str | None = None
    """W3C tracestate that goes with ``traceparent``, if any."""
    timed_out_at: datetime | None = None
    """When the run was ended as TimedOut."""


class EventType(StrEnum):
    """What happened in a run."""

    run_started = "run.started"
    step_started = "step.started"
    step_completed = "step.completed"
    step_failed = "step.failed"
    step_pending = "step.pending"
    step_skipped = "step.skipped"
    step_retried = "step.retried"
    run_completed = "run.completed"
    run_cancel_requested = "run.cancel_requested"
    run_rerun = "run.rerun"


class RunEvent(_Record):
    """One entry of a run's event history."""

    sequence: int
    """1-based position in the run's history."""
    run_id: UUID
    """The run."""
    timestamp: datetime
    """When it happened."""
    type: EventType
    """What happened."""
    step_key: str | None = None
    """The step concerned, if any."""
    message: str | None = None
    """Human-readable detail."""


class RunLineage(_Record):
    """A run's re-run family: the runs it was re-run from and the runs re-run from it."""

    run_id: UUID
    """The run asked about."""
    ancestors: list[FlowRunRecord]
    """Its ``source_run_id`` chain, nearest first."""
    descendants: list[FlowRunRecord]
    """Runs re-run from it, and from those, breadth first, oldest first at each level."""
