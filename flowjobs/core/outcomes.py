"""What a step job did with its attempt: the ``StepOutcome`` that ``Engine.execute_step`` returns
and ``flowjobs.jobs.run_step`` hands RQ as the job's result (its string: RQ stores results as JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class StepOutcome(StrEnum):
    """The result of one step job, as rq-dashboard shows it.

    ``Succeeded`` and ``Failed`` are the step statuses of the same names, and ``stale`` and
    ``run_not_running`` the claim refusals (``flowjobs.store.ClaimRefusal``) of the same names, so
    ``StepOutcome(status.value)`` and ``StepOutcome(refusal.value)`` convert them.
    """

    #: The attempt succeeded and its output is recorded; the run goes on.
    succeeded = "Succeeded"
    #: The attempt failed with no retry left and its error is recorded; the run goes on.
    failed = "Failed"
    #: The attempt is recorded and the step's next one is scheduled (a retry, or a poll's next look).
    rescheduled = "rescheduled"
    #: A WaitForSignal step is parked Pending, holding no worker, until its signal or timeout.
    parked = "parked"
    #: A ForEach step recorded its items and dispatched its first iterations.
    expanded = "expanded"
    #: Nothing was recorded: the attempt stopped being the current one while it ran (recovery
    #: replaced it when its lease expired).
    discarded = "discarded"
    #: The attempt is recorded, but the run closed meanwhile: the step is final, no next attempt.
    closed = "closed"
    #: The claim was refused: the attempt is not the step's current Pending one (a late or repeated job).
    stale = "stale"
    #: The claim was refused: the run is not Running (closed, or gone).
    run_not_running = "run_not_running"
    #: Nothing ran: the run's pinned manifest, or the step in it, was not found.
    unknown = "unknown"
    #: The job of a failed attempt was requeued (from rq-dashboard): the step got a new attempt, as
    #: with ``FlowClient.retry_step``.
    retried = "retried"


@dataclass(frozen=True)
class StepReport:
    """What a step job tells the job system: its outcome and, for the attempt it ran, the output or
    the failure, so RQ can show a failed attempt as a failed job and a succeeded one with its result."""

    outcome: StepOutcome
    failed: bool = False
    """The attempt this job ran was recorded Failed (whether or not another attempt follows)."""
    output_json: str | None = None
    """A succeeded attempt's output."""
    error: str | None = None
    """A failed attempt's reason, or why the job was refused."""
    traceback: str | None = None
    """The handler's traceback, when it raised."""
