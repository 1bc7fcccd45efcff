"""The ``JobRunner`` protocol: what the engine needs from a job system (RQ, or in-process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from redis.client import Pipeline

from flowjobs.core.job_calls import JobCall, JobState, StoredJobs
from flowjobs.core.schedules import ScheduleState


class JobRunner(Protocol):
    """What the engine needs from a job system."""

    def enqueue(self, call: JobCall) -> str:
        """Queue a job now. Returns its id."""
        ...

    def enqueue_many(self, calls: Sequence[JobCall]) -> list[str]:
        """Queue several jobs in one round-trip."""
        ...

    def enqueue_commands(self, calls: Sequence[JobCall]) -> list[list[list[bytes]]] | None:
        """The Redis commands that enqueue each call, for a runner whose jobs live in the store's
        Redis (so a transition script can enqueue atomically with the dispatch); None otherwise."""
        ...

    def schedule(self, call: JobCall, delay: timedelta) -> str:
        """Queue a job to run after a delay, holding no worker meanwhile."""
        ...

    def continue_with(self, parent_id: str, call: JobCall) -> str:
        """Queue a job to run after another one finishes (for applications, not for flows)."""
        ...

    def delete(self, job_id: str) -> bool:
        """Remove a queued or scheduled job; False if there is none."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Stop a queued or scheduled job from running, keeping it visible as cancelled; False if
        there is no such job waiting."""
        ...

    def requeue(self, job_id: str) -> bool:
        """Put a failed or lost job back in the queue; False if there is none."""
        ...

    def state(self, job_id: str) -> JobState:
        """The job's state; ``Deleted`` when the job system no longer has it."""
        ...

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The state of each job, in one round-trip (for recovery passes over many runs)."""
        ...

    def stored_jobs(self) -> StoredJobs | None:
        """The job system's keys in the store's Redis; None when its jobs are kept elsewhere."""
        ...


def enqueue_in(runner: JobRunner, call: JobCall, pipe: Pipeline | None) -> None:
    """Queue ``call`` inside the caller's open ``MULTI`` (``pipe``) when the runner's jobs live in
    that Redis (its ``enqueue_commands``); otherwise (no pipe, or jobs kept elsewhere) now."""
    commands = runner.enqueue_commands([call]) if pipe is not None else None
    if pipe is None or commands is None:
        runner.enqueue(call)
        return
    for command in commands[0]:
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]


class RecurringJobStore(Protocol):
    """Where an application's recurring jobs are kept (``flowjobs.runtime.recurring``): the
    schedule store (``flowjobs.store.schedules.ScheduleStore``), handed in by whoever builds the
    runner (``flowjobs.factory``) so that the runtime never imports the store, or
    ``InProcessRunner``'s memory."""

    def require(self, schedule_id: str) -> ScheduleState:
        """One schedule; ``ScheduleNotFound`` if there is none."""
        ...

    def all(self) -> list[ScheduleState]:
        """Every schedule, by id."""
        ...

    def change(
        self, schedule_id: str, transition: Callable[[ScheduleState | None], ScheduleState | None]
    ) -> ScheduleState | None:
        """Apply ``transition`` atomically; returns the state after it (None: no schedule)."""
        ...

    def remove(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none."""
        ...

    def claim_tick(
        self, schedule_id: str, tick: datetime, job_id: str, enqueue: Callable[[Pipeline | None], None]
    ) -> tuple[str, bool]:
        """Enqueue a tick's job once, in the same ``MULTI`` as the tick's claim (a store without
        Redis passes None); returns the job id and whether this call enqueued it."""
        ...


@runtime_checkable
class KeepsRecurringJobs(Protocol):
    """A runner that knows where its application's recurring jobs are kept (``RQJobRunner``: the
    schedule store; ``InProcessRunner``: its memory), so ``RecurringJob(runner)`` needs nothing else."""

    schedules: RecurringJobStore
