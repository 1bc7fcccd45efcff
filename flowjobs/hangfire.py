"""Hangfire's job vocabulary for application jobs, over any ``JobRunner`` (RQ by default).

``BackgroundJob`` enqueues, schedules and chains fire-and-forget jobs; ``RecurringJob`` keeps cron
jobs fired once per tick by the schedules duty every worker runs. Jobs name their function by
dotted path and carry JSON arguments only (RQ's JSON serializer, never pickle): a lambda, a local
function or an argument that is not JSON is refused when the job is created (``InvalidJobCall``),
not when a worker fails to run it.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from redis import Redis

from flowjobs import factory
from flowjobs.clock import utcnow
from flowjobs.errors import InvalidJobCall
from flowjobs.runtime.base import JobCall, JobRunner, JobState, RecurringJobInfo
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.settings import Settings, load_settings

#: What names a job function: its dotted path, or the module-level function itself.
JobFunction = str | Callable[..., Any]


def function_path(func: JobFunction) -> str:
    """The dotted path a worker imports the function by; ``InvalidJobCall`` unless it resolves back
    to a module-level function (a lambda, a nested function or a bound method does not)."""
    if isinstance(func, str):
        path = func
    else:
        module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", None)
        if not module or not qualname or "<" in qualname or "." in qualname:
            raise InvalidJobCall(
                f"{func!r} is not a module-level function: a worker finds a job's function by its dotted "
                "path, so lambdas, local functions and methods cannot be jobs"
            )
        path = f"{module}.{qualname}"
    module_name, _, attr = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError) as error:
        raise InvalidJobCall(f"job function {path!r} cannot be imported: {error}") from error
    if not callable(target) or (not isinstance(func, str) and target is not func):
        raise InvalidJobCall(f"{path!r} does not name a callable a worker can import")
    if module_name == "__main__":
        raise InvalidJobCall(f"{path!r} lives in __main__, which a worker cannot import")
    return path


def job_call(
    func: JobFunction, args: tuple[Any, ...], kwargs: dict[str, Any], *, job_id: str | None = None
) -> JobCall:
    """An application job: checked function path, arguments checked as JSON (as RQ will send them)."""
    path = function_path(func)
    try:
        json.dumps([list(args), kwargs], allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidJobCall(f"arguments of {path} are not JSON (RQ's JSON serializer): {error}") from error
    return JobCall(
        func=path,
        args=tuple(args),
        kwargs=dict(kwargs),
        job_id=job_id or f"hf-{uuid.uuid4().hex}",
        description=f"{path}()",
    )


def _runner(runner: JobRunner | None) -> JobRunner:
    return runner if runner is not None else runner_from_settings()


def runner_from_settings(settings: Settings | None = None, redis: Redis | None = None) -> RQJobRunner:
    """The RQ runner of ``REDIS_URL``, ``FLOWJOBS_QUEUE`` and ``FLOWJOBS_KEY_PREFIX``."""
    settings = settings or load_settings()
    return factory.runner_from_settings(settings, redis or factory.connect(settings))


class BackgroundJob:
    """Fire-and-forget, delayed and continuation jobs (Hangfire's ``BackgroundJob``)."""

    def __init__(self, runner: JobRunner | None = None) -> None:
        self.runner = _runner(runner)

    def enqueue(self, func: JobFunction, *args: Any, **kwargs: Any) -> str:
        """Run ``func(*args, **kwargs)`` on a worker as soon as one is free; returns the job id."""
        return self.runner.enqueue(job_call(func, args, kwargs))

    def schedule(
        self, func: JobFunction, delay_or_when: timedelta | datetime | float, *args: Any, **kwargs: Any
    ) -> str:
        """Run it after a delay (a ``timedelta`` or seconds) or at an aware ``datetime``."""
        if isinstance(delay_or_when, datetime):
            if delay_or_when.tzinfo is None:
                raise InvalidJobCall(
                    "schedule() needs a timezone-aware datetime (RQ reads naive ones as local)"
                )
            delay = delay_or_when - utcnow()
        elif isinstance(delay_or_when, timedelta):
            delay = delay_or_when
        else:
            delay = timedelta(seconds=float(delay_or_when))
        return self.runner.schedule(job_call(func, args, kwargs), delay)

    def continue_job_with(self, parent_id: str, func: JobFunction, *args: Any, **kwargs: Any) -> str:
        """Run it after job ``parent_id`` succeeds (Hangfire's ``ContinueJobWith``; a failed parent
        leaves it awaiting, as RQ does)."""
        return self.runner.continue_with(parent_id, job_call(func, args, kwargs))

    def delete(self, job_id: str) -> bool:
        """Delete a job; False if there is none."""
        return self.runner.delete(job_id)

    def requeue(self, job_id: str) -> bool:
        """Queue a failed (or lost) job again; False if there is none."""
        return self.runner.requeue(job_id)

    def state(self, job_id: str) -> JobState:
        """The job's state in Hangfire's names (``Deleted`` when the job system no longer has it)."""
        return self.runner.state(job_id)


class RecurringJob:
    """Cron jobs (Hangfire's ``RecurringJob``), fired once per tick by the schedules duty that every
    ``flowjobs worker`` and ``flowjobs scheduler`` runs."""

    def __init__(self, runner: JobRunner | None = None) -> None:
        self.runner = _runner(runner)

    def add_or_update(
        self,
        recurring_id: str,
        func: JobFunction,
        cron: str,
        *args: Any,
        time_zone: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Create or replace ``recurring_id`` (``[A-Za-z0-9_-]``): ``func(*args, **kwargs)`` on
        ``cron`` (read in ``time_zone``, UTC by default). A pause or cron override set with
        ``flowjobs schedules`` is kept."""
        self.runner.add_or_update_recurring(
            recurring_id, job_call(func, args, kwargs), cron, time_zone=time_zone
        )

    def remove_if_exists(self, recurring_id: str) -> bool:
        """Remove it (jobs it already enqueued stay); False if there was none."""
        return self.runner.remove_recurring(recurring_id)

    def trigger(self, recurring_id: str) -> str:
        """Enqueue it once now, keeping its schedule; returns the job id."""
        return self.runner.trigger_recurring(recurring_id)

    def list(self) -> list[RecurringJobInfo]:
        """Every recurring job: cron, zone, next and last execution, last job id, paused."""
        return self.runner.list_recurring()
