"""Run and step statuses, stored by their names (the reference's vocabulary)."""

from __future__ import annotations

from enum import StrEnum


class StepStatus(StrEnum):
    """Status of one step in one run."""

    #: Dispatched as an RQ job (or parked, waiting for a delay or a signal); no worker holds it.
    Pending = "Pending"
    #: A worker has claimed it and its handler is running.
    Running = "Running"
    #: The handler finished and its output is recorded.
    Succeeded = "Succeeded"
    #: The last attempt failed; the reason is in ``error_message``.
    Failed = "Failed"
    #: Never ran: a prerequisite ended in a status its ``run_after`` does not accept, or a When was false.
    Skipped = "Skipped"

    @property
    def is_final(self) -> bool:
        """True for statuses a step never leaves on its own."""
        return self in _FINAL_STEP


class RunStatus(StrEnum):
    """Status of one run of a flow."""

    #: Triggered; its trigger job waits in the queue for a worker.
    Pending = "Pending"
    #: A worker started it; steps are being dispatched and executed.
    Running = "Running"
    #: Every failure was handled and at least one leaf step succeeded.
    Succeeded = "Succeeded"
    #: A step failed and no error-handler step that lists it succeeded.
    Failed = "Failed"
    #: Nothing ran: every leaf step was skipped.
    Skipped = "Skipped"
    #: Cancelled on request.
    Cancelled = "Cancelled"
    #: Its run deadline passed before it finished.
    TimedOut = "TimedOut"

    @property
    def is_terminal(self) -> bool:
        """True once the run is closed."""
        return self not in (RunStatus.Pending, RunStatus.Running)


_FINAL_STEP = frozenset({StepStatus.Succeeded, StepStatus.Failed, StepStatus.Skipped})
