"""An application's recurring jobs (``flowjobs.hangfire.RecurringJob``): one service over a
``RecurringJobStore`` (the schedule store in Redis, or ``InProcessRunner``'s memory) and any
``JobRunner``, so every runner's recurring jobs are declared, fired and listed alike."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from redis.client import Pipeline

from flowjobs.core.clock import iso, utcnow
from flowjobs.core.job_calls import JobCall, RecurringJobInfo
from flowjobs.core.schedules import (
    Fired,
    ScheduleKind,
    ScheduleState,
    check_recurring_id,
    declare,
    recurring_info,
    recurring_job,
)
from flowjobs.runtime.base import JobRunner, RecurringJobStore, enqueue_in


class RecurringJobs:
    """Recurring jobs kept in ``store`` and enqueued through ``runner``."""

    def __init__(self, store: RecurringJobStore, runner: JobRunner) -> None:
        self.store = store
        self.runner = runner

    def add_or_update(
        self, recurring_id: str, call: JobCall, cron: str, *, time_zone: str | None = None
    ) -> None:
        """Create or replace a recurring job (its pause flag and cron override are kept)."""
        declared = recurring_job(recurring_id, call, cron, time_zone, utcnow())
        self.store.change(recurring_id, lambda current: declare(current, declared, utcnow()))

    def remove(self, recurring_id: str) -> bool:
        """Delete a recurring job; its jobs already enqueued stay."""
        return self.store.remove(check_recurring_id(recurring_id))

    def trigger(self, recurring_id: str) -> str:
        """Enqueue a recurring job once now (paused or not), keeping its schedule."""
        state = self.store.require(check_recurring_id(recurring_id))
        return fire_recurring_job(self.store, self.runner, state, None).job_id

    def list(self) -> list[RecurringJobInfo]:
        """The application's recurring jobs, by id (flows' Cron triggers are not listed)."""
        return [recurring_info(state) for state in self.store.all() if state.kind is ScheduleKind.job]


def fire_recurring_job(
    store: RecurringJobStore, runner: JobRunner, state: ScheduleState, tick: datetime | None
) -> Fired:
    """Enqueue a recurring job for ``tick`` (None: an extra fire now, ``trigger``).

    A tick's job id is ``<recurring id>-<tick epoch seconds>`` and is enqueued in the same
    ``MULTI`` as the tick's claim, so a duplicate fire returns the first job and enqueues nothing.
    """
    base = state.call()
    if tick is None:
        call = dataclasses.replace(
            base,
            job_id=f"{state.schedule_id}-now-{uuid.uuid4().hex[:12]}",
            meta={**base.meta, "recurring_id": state.schedule_id, "tick": None},
        )
        return Fired(runner.enqueue(call), None, True)
    call = dataclasses.replace(
        base,
        job_id=f"{state.schedule_id}-{int(tick.timestamp())}",
        meta={**base.meta, "recurring_id": state.schedule_id, "tick": iso(tick)},
    )

    def enqueue(pipe: Pipeline | None) -> None:
        enqueue_in(runner, call, pipe)

    job_id, new = store.claim_tick(state.schedule_id, tick, call.job_id, enqueue)
    return Fired(job_id, None, new)
