"""Firing an application's recurring job (``flowjobs.hangfire.RecurringJob``) on a job runner
whose jobs live in the schedules' Redis: once per tick, whatever the number of processes."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from redis.client import Pipeline

from flowjobs.core.clock import iso
from flowjobs.core.schedules import Fired, ScheduleState
from flowjobs.runtime.base import JobRunner, RecurringJobStore


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

    def enqueue(pipe: Pipeline) -> None:
        runner.enqueue(call, pipeline=pipe)

    job_id, new = store.claim_tick(state.schedule_id, tick, call.job_id, enqueue)
    return Fired(job_id, None, new)
