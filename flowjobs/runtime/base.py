"""The ``JobRunner`` protocol, the job calls the engine hands it, and flowjobs' job ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from redis.client import Pipeline

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class JobFailed(Exception):
    """Raised by a job function to end its job as failed (RQ's failed registry, this message as the
    job's exception info) after it recorded everything itself: the job system must not retry it."""


class JobState(StrEnum):
    """State of a background job, in Hangfire's names."""

    Enqueued = "Enqueued"
    Scheduled = "Scheduled"
    Awaiting = "Awaiting"
    Processing = "Processing"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Deleted = "Deleted"


@dataclass(frozen=True)
class JobCall:
    """One background job: a function by dotted path with JSON arguments, and how to show it."""

    func: str
    """Dotted path of the job function (``flowjobs.jobs.run_step``)."""
    args: tuple[Any, ...]
    """JSON-serialisable positional arguments."""
    job_id: str
    """Job id, deterministic so a re-dispatch reuses it (``[A-Za-z0-9_-]+``)."""
    description: str
    """Readable line for rq-dashboard (``flow=<name> run=<id> step=<key>``)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Immutable cross-references: ``flow_id``, ``run_id``, ``step_key``, ``attempt``."""
    timeout_seconds: float | None = None
    """Job timeout; the job system kills the job after it (None: the runner's default)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable keyword arguments (application jobs of ``flowjobs.hangfire``)."""
    retry_delays: tuple[int, ...] = ()
    """Seconds before each automatic retry of a failed job, one per retry (application jobs of
    ``flowjobs.hangfire``; a flow step retries by its own policy, never by the job system's)."""
    keep_failed: bool = False
    """Keep the job while it is Failed until it is deleted or requeued (Hangfire's rule for
    application jobs), instead of the runner's window for finished jobs."""


@dataclass(frozen=True)
class RecurringJobInfo:
    """One recurring job as ``JobRunner.list_recurring`` lists it (Hangfire's recurring-job list)."""

    id: str
    """The recurring id."""
    cron: str
    """The expression it fires on (a runtime override included)."""
    time_zone: str
    """IANA zone of the expression."""
    next_execution: datetime | None
    """Next tick (None while paused)."""
    last_execution: datetime | None
    """When the last tick fired."""
    last_job_id: str | None
    """Job the last tick enqueued."""
    paused: bool = False
    """Paused: it does not fire until resumed."""


@dataclass(frozen=True)
class StoredJobs:
    """Where a job system keeps its jobs in the store's Redis, so that retention can delete a
    finished run's jobs with it (``JobRunner.stored_jobs``)."""

    keys: Callable[[str], list[str]]
    """Every key one job owns (its hash, its results...), from its id."""
    registries: tuple[str, ...]
    """Sorted sets that can list a job id (finished, failed... registries of the runner's queue)."""


class JobRunner(Protocol):
    """What the engine needs from a job system."""

    def enqueue(self, call: JobCall, *, pipeline: Pipeline | None = None) -> str:
        """Queue a job now; with a pipeline, as part of the caller's MULTI/EXEC. Returns its id."""
        ...

    def enqueue_many(self, calls: Sequence[JobCall]) -> list[str]:
        """Queue several jobs in one round-trip."""
        ...

    def enqueue_commands(self, calls: Sequence[JobCall]) -> list[list[list[bytes]]] | None:
        """The Redis commands that enqueue each call, for a runner whose jobs live in the store's
        Redis (so a transition script can enqueue atomically with the dispatch); None otherwise."""
        ...

    def schedule(self, call: JobCall, delay: timedelta, *, pipeline: Pipeline | None = None) -> str:
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

    def add_or_update_recurring(
        self, recurring_id: str, call: JobCall, cron: str, *, time_zone: str | None = None
    ) -> None:
        """Create or replace a recurring job firing ``call`` on ``cron`` (once per tick, whatever
        the number of processes); a pause or cron override set at runtime is kept."""
        ...

    def remove_recurring(self, recurring_id: str) -> bool:
        """Stop a recurring job's future ticks; False if there is none."""
        ...

    def trigger_recurring(self, recurring_id: str) -> str:
        """Fire a recurring job once now, keeping its schedule; returns the job id
        (``ScheduleNotFound`` if there is none)."""
        ...

    def list_recurring(self) -> list[RecurringJobInfo]:
        """Every recurring job of the application (flows' Cron triggers are not listed here)."""
        ...


def trigger_job_id(run_id: UUID | str) -> str:
    """Id of a run's trigger job."""
    return f"fj-{run_id}-trigger"


def step_job_id(run_id: UUID | str, step_key: str, attempt: int) -> str:
    """Id of one attempt of one step; readable where the step key allows it."""
    safe = _UNSAFE.sub("_", step_key)[:40]
    if safe != step_key:
        safe = f"{safe}_{hashlib.sha1(step_key.encode()).hexdigest()[:8]}"
    return f"fj-{run_id}-s-{safe}-{attempt}"
