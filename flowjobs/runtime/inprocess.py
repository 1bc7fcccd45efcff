"""``JobRunner`` that keeps jobs in memory and runs them in this process, for flow tests."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from redis.client import Pipeline

from flowjobs.core.clock import utcnow
from flowjobs.core.cron import FirePlan, plan_fire
from flowjobs.core.errors import JobNotFound, ScheduleNotFound
from flowjobs.core.job_calls import JobCall, JobFailed, JobState, StoredJobs
from flowjobs.core.schedules import ScheduleState, fired
from flowjobs.runtime.current import running_job
from flowjobs.runtime.recurring import fire_recurring_job


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    module = __import__(module_name, fromlist=[attr])
    func: Callable[..., Any] = getattr(module, attr)
    return func


class InProcessRunner:
    """Jobs wait in a heap ordered by due time (monotonic clock); ``run_until_idle`` executes them.

    Delayed jobs (retries, polls, signal timeouts) run when due, as they would on RQ: the engine
    compares real times, so running them early would not make them mean anything else.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, JobCall]] = []
        self._counter = itertools.count()
        self._states: dict[str, JobState] = {}
        self._calls: dict[str, JobCall] = {}
        #: The application's recurring jobs (``flowjobs.hangfire.RecurringJob``), fired by
        #: ``fire_due_recurring``.
        self.schedules = MemorySchedules()
        self._retried: dict[str, int] = {}

    def enqueue(self, call: JobCall) -> str:
        """Queue a job now (nothing runs until ``run_until_idle``)."""
        return self._push(call, 0.0, JobState.Enqueued)

    def enqueue_many(self, calls: Sequence[JobCall]) -> list[str]:
        """Queue several jobs."""
        return [self.enqueue(call) for call in calls]

    def enqueue_commands(self, calls: Sequence[JobCall]) -> list[list[list[bytes]]] | None:
        """None: in-process jobs are not in Redis; the engine enqueues them after the dispatch."""
        return None

    def schedule(self, call: JobCall, delay: timedelta) -> str:
        """Queue a job to run once ``delay`` has passed (at once, as enqueued, if it already has, like RQ)."""
        state = JobState.Scheduled if delay > timedelta(0) else JobState.Enqueued
        return self._push(call, delay.total_seconds(), state)

    def continue_with(self, parent_id: str, call: JobCall) -> str:
        """Queue a job after everything queued so far (which includes its parent); ``JobNotFound``
        for a parent this runner never saw."""
        if parent_id not in self._states:
            raise JobNotFound(f"cannot add a continuation: parent job {parent_id!r} does not exist")
        return self._push(call, 0.0, JobState.Awaiting)

    def _push(self, call: JobCall, delay: float, state: JobState) -> str:
        heapq.heappush(self._heap, (time.monotonic() + max(delay, 0.0), next(self._counter), call))
        self._states[call.job_id] = state
        self._calls[call.job_id] = call
        return call.job_id

    def delete(self, job_id: str) -> bool:
        """Forget a queued job."""
        before = len(self._heap)
        self._heap = [item for item in self._heap if item[2].job_id != job_id]
        heapq.heapify(self._heap)
        if job_id in self._states:
            self._states[job_id] = JobState.Deleted
        return len(self._heap) < before

    def cancel(self, job_id: str) -> bool:
        """Forget a waiting job (the in-process runner keeps no cancelled jobs)."""
        return self.delete(job_id)

    def requeue(self, job_id: str) -> bool:
        """Queue a known job again."""
        call = self._calls.get(job_id)
        if call is None:
            return False
        self.enqueue(call)
        return True

    def state(self, job_id: str) -> JobState:
        """State of a job this runner has seen; ``Deleted`` otherwise."""
        return self._states.get(job_id, JobState.Deleted)

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """State of each job, as ``state`` gives it."""
        return {job_id: self.state(job_id) for job_id in job_ids}

    def stored_jobs(self) -> StoredJobs | None:
        """None: in-process jobs are not kept in Redis."""
        return None

    def fire_due_recurring(self, now: datetime | None = None, grace_seconds: float = 3600) -> int:
        """Queue each recurring job due at ``now`` once, for its latest due tick (the schedules
        duty's rule, ``plan_fire``); returns how many were queued."""
        now = now or utcnow()
        queued = 0
        for state in self.schedules.all():
            if state.is_paused or state.next_fire_at is None or state.next_fire_at > now:
                continue
            fire = plan_fire(state.effective_cron, state.time_zone, state.next_fire_at, now, grace_seconds)
            job_id = None
            if fire.tick is not None:
                outcome = fire_recurring_job(self.schedules, self, state, fire.tick)
                job_id = outcome.job_id
                queued += outcome.new
            self.schedules.change(state.schedule_id, _moved_on(fire, now, job_id))
        return queued

    def run_until_idle(self, max_wait_seconds: float = 5.0, max_jobs: int = 100_000) -> int:
        """Execute due jobs, and the jobs they queue, until none is due within ``max_wait_seconds``.

        Returns how many ran; jobs due later (a parked step's timeout, a long backoff) stay queued
        for a later call.
        """
        ran = 0
        while self._heap and ran < max_jobs:
            due, _, call = self._heap[0]
            wait = due - time.monotonic()
            if wait > max_wait_seconds:
                break
            if wait > 0:
                time.sleep(wait)
            heapq.heappop(self._heap)
            self._states[call.job_id] = JobState.Processing
            with running_job(call):
                try:
                    _resolve(call.func)(*call.args, **call.kwargs)
                except JobFailed:
                    self._states[call.job_id] = JobState.Failed  # recorded by the job itself
                    ran += 1
                    continue
                except Exception:
                    retried = self._retried.get(call.job_id, 0)
                    if retried < len(call.retry_delays):  # an automatic retry, as RQ's ``Retry``
                        self._retried[call.job_id] = retried + 1
                        self._push(call, call.retry_delays[retried], JobState.Scheduled)
                        ran += 1
                        continue
                    self._states[call.job_id] = JobState.Failed
                    raise
            self._states[call.job_id] = JobState.Succeeded
            ran += 1
        return ran


def _moved_on(
    fire: FirePlan, now: datetime, job_id: str | None
) -> Callable[[ScheduleState | None], ScheduleState | None]:
    return lambda current: current and fired(current, fire, now, job_id=job_id)


class MemorySchedules:
    """A ``RecurringJobStore`` in memory, for ``InProcessRunner``."""

    def __init__(self) -> None:
        self._states: dict[str, ScheduleState] = {}
        self._ticks: dict[tuple[str, datetime], str] = {}

    def require(self, schedule_id: str) -> ScheduleState:
        """One schedule; ``ScheduleNotFound`` if there is none."""
        state = self._states.get(schedule_id)
        if state is None:
            raise ScheduleNotFound(f"no recurring job with id {schedule_id!r}")
        return state

    def all(self) -> list[ScheduleState]:
        """Every schedule, by id."""
        return [self._states[key] for key in sorted(self._states)]

    def change(
        self, schedule_id: str, transition: Callable[[ScheduleState | None], ScheduleState | None]
    ) -> ScheduleState | None:
        """Apply ``transition``; returns the state after it (None: no schedule)."""
        new = transition(self._states.get(schedule_id))
        if new is None:
            self._states.pop(schedule_id, None)
        else:
            self._states[schedule_id] = new
        return new

    def remove(self, schedule_id: str) -> bool:
        """Forget a schedule; False if there was none."""
        return self._states.pop(schedule_id, None) is not None

    def claim_tick(
        self, schedule_id: str, tick: datetime, job_id: str, enqueue: Callable[[Pipeline | None], None]
    ) -> tuple[str, bool]:
        """Enqueue a tick's job once; a tick claimed before returns ``(its job id, False)``."""
        claimed = self._ticks.get((schedule_id, tick))
        if claimed is not None:
            return claimed, False
        self._ticks[(schedule_id, tick)] = job_id
        enqueue(None)
        return job_id, True
