"""Hangfire's job vocabulary for application jobs, over any ``JobRunner`` (RQ by default).

``BackgroundJob`` enqueues, schedules and chains fire-and-forget jobs; ``RecurringJob`` keeps cron
jobs fired once per tick by the schedules duty every worker runs. Jobs name their function by
dotted path and carry JSON arguments only (RQ's JSON serializer, never pickle): a lambda, a local
function or an argument that is not JSON is refused when the job is created (``InvalidJobCall``),
not when a worker fails to run it.

As in Hangfire, a failed job is retried 10 times with Hangfire's back-off (``automatic_retry``
changes that per job function), stays Failed until it is deleted or requeued, and the
continuations of a deleted job are deleted with it.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from threading import Lock
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from redis import Redis

from flowjobs import factory
from flowjobs.core.clock import utcnow
from flowjobs.core.errors import InvalidJobCall
from flowjobs.core.job_calls import JobCall, JobState, RecurringJobInfo
from flowjobs.core.limits import MAX_STEP_SECONDS
from flowjobs.runtime.base import JobRunner, KeepsRecurringJobs
from flowjobs.runtime.recurring import RecurringJobs
from flowjobs.runtime.rq import RQJobRunner
from flowjobs.settings import Settings, load_settings
from flowjobs.tracing import caller_trace

#: What names a job function: its dotted path, or the module-level function itself.
JobFunction = str | Callable[..., Any]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_RETRY_ATTEMPTS = 10
"""Retries of a failed job whose function sets none (Hangfire's ``AutomaticRetry`` default)."""

MAX_RETRY_ATTEMPTS = 1000
"""Most retries ``automatic_retry`` accepts (RQ keeps one delay per retry on the job)."""

_RETRY_DELAYS = "__flowjobs_retry_delays__"
_TIMEOUT = "__flowjobs_timeout_seconds__"


def hangfire_delays(attempts: int) -> tuple[int, ...]:
    """Hangfire's back-off for retry n (from 1): ``(n-1)^4 + 15 + random(0..29) * n`` seconds, so
    15-44 s before the first retry and about 1.8 h before the tenth (drawn when the job is created)."""
    return tuple(round((n - 1) ** 4 + 15 + random.randrange(30) * n) for n in range(1, attempts + 1))


def _retry_delays(attempts: int, delays_in_seconds: Sequence[float] | None) -> tuple[int, ...]:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 <= attempts <= MAX_RETRY_ATTEMPTS:
        raise InvalidJobCall(f"attempts must be an integer from 0 to {MAX_RETRY_ATTEMPTS}, not {attempts!r}")
    if delays_in_seconds is None:
        return hangfire_delays(attempts)
    delays = list(delays_in_seconds)
    if attempts and not delays:
        raise InvalidJobCall("delays_in_seconds must not be empty")
    for delay in delays:
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < math.inf:
            raise InvalidJobCall(f"retry delays are seconds >= 0, not {delay!r}")
    # Hangfire's rule: retry n waits delays[n-1], the last delay again for retries past the list.
    return tuple(math.ceil(delays[min(n, len(delays) - 1)]) for n in range(attempts))


def automatic_retry(
    attempts: int = DEFAULT_RETRY_ATTEMPTS, delays_in_seconds: Sequence[float] | None = None
) -> Callable[[F], F]:
    """Hangfire's ``[AutomaticRetry(Attempts = …, DelaysInSeconds = …)]`` on a job function: retry
    its failed jobs ``attempts`` times (0: never) after these delays (default: Hangfire's back-off),
    then leave them Failed. Undecorated functions retry ``DEFAULT_RETRY_ATTEMPTS`` times."""
    delays = _retry_delays(attempts, delays_in_seconds)

    def mark(func: F) -> F:
        setattr(func, _RETRY_DELAYS, delays)
        return func

    return mark


def job_timeout(seconds: float) -> Callable[[F], F]:
    """Let the jobs of this function run up to ``seconds`` (at most 7 days) before the worker stops
    them as failed, instead of ``FLOWJOBS_JOB_TIMEOUT_SECONDS`` (Hangfire has no timeout)."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_STEP_SECONDS
    ):
        raise InvalidJobCall(f"job timeout must be seconds in (0, {MAX_STEP_SECONDS}], not {seconds!r}")

    def mark(func: F) -> F:
        setattr(func, _TIMEOUT, float(seconds))
        return func

    return mark


def function_path(func: JobFunction) -> str:
    """The dotted path a worker imports the function by; ``InvalidJobCall`` unless it resolves back
    to a module-level function (a lambda, a nested function or a bound method does not)."""
    return _resolve(func)[0]


def _resolve(func: JobFunction) -> tuple[str, Callable[..., Any]]:
    """``function_path`` and the function it names."""
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
    return path, target


def job_call(
    func: JobFunction, args: tuple[Any, ...], kwargs: dict[str, Any], *, job_id: str | None = None
) -> JobCall:
    """An application job: checked function path, arguments checked as JSON (as RQ will send them),
    the function's ``automatic_retry`` and ``job_timeout``; kept while Failed, as Hangfire keeps it."""
    path, target = _resolve(func)
    delays: tuple[int, ...] | None = getattr(target, _RETRY_DELAYS, None)
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
        timeout_seconds=getattr(target, _TIMEOUT, None),
        retry_delays=hangfire_delays(DEFAULT_RETRY_ATTEMPTS) if delays is None else delays,
        keep_failed=True,
    )


def _traced(call: JobCall) -> JobCall:
    """``call`` carrying the trace context current where it is enqueued (none without one): its
    span on the worker joins that trace. A recurring job's definition carries none: each firing
    starts its own."""
    return replace(call, meta={**call.meta, **caller_trace({})})


def _runner(runner: JobRunner | None) -> JobRunner:
    return runner if runner is not None else runner_from_settings()


def runner_from_settings(settings: Settings | None = None, redis: Redis | None = None) -> RQJobRunner:
    """The RQ runner of ``REDIS_URL``, ``FLOWJOBS_QUEUE`` and ``FLOWJOBS_KEY_PREFIX``."""
    settings = settings or load_settings()
    return factory.runner_from_settings(settings, redis or factory.connect(settings))


_defaults: dict[type, Any] = {}
_defaults_lock = Lock()


class _OnClassToo(Generic[P, R]):
    """A façade method that also works on the class, as Hangfire's static ``BackgroundJob.Enqueue``
    does: called on the class, it runs on one instance per class built from the settings on first
    use (``REDIS_URL``, ``FLOWJOBS_QUEUE``, ``FLOWJOBS_KEY_PREFIX``)."""

    def __init__(self, method: Callable[Concatenate[Any, P], R]) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, instance: None, owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Callable[P, R]: ...
    def __get__(self, instance: object | None, owner: type) -> Callable[P, R]:
        if instance is None:
            with _defaults_lock:
                instance = _defaults.get(owner)
                if instance is None:
                    instance = _defaults[owner] = owner()
        return partial(self.method, instance)


def on_class_too(method: Callable[Concatenate[Any, P], R]) -> _OnClassToo[P, R]:
    """Mark a façade method callable on the class as well (``_OnClassToo``)."""
    return _OnClassToo(method)


class BackgroundJob:
    """Fire-and-forget, delayed and continuation jobs (Hangfire's ``BackgroundJob``): on an instance
    over a given runner (``BackgroundJob(runner).enqueue(...)``), or on the class over the
    settings' (``BackgroundJob.enqueue(...)``, as Hangfire's static methods)."""

    def __init__(self, runner: JobRunner | None = None) -> None:
        self.runner = _runner(runner)

    @on_class_too
    def enqueue(self, func: JobFunction, *args: Any, **kwargs: Any) -> str:
        """Run ``func(*args, **kwargs)`` on a worker as soon as one is free; returns the job id."""
        return self.runner.enqueue(_traced(job_call(func, args, kwargs)))

    @on_class_too
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
        return self.runner.schedule(_traced(job_call(func, args, kwargs)), delay)

    @on_class_too
    def continue_job_with(self, parent_id: str, func: JobFunction, *args: Any, **kwargs: Any) -> str:
        """Run it after job ``parent_id`` succeeds (Hangfire's ``ContinueJobWith``): it awaits a
        failed parent, is deleted with a deleted one, and ``JobNotFound`` is raised for an unknown
        or expired parent id."""
        return self.runner.continue_with(parent_id, _traced(job_call(func, args, kwargs)))

    @on_class_too
    def delete(self, job_id: str) -> bool:
        """Delete a job and the continuations awaiting it; False if there is none. A job being
        processed runs to its end but stays Deleted (not retried, its continuations not run)."""
        return self.runner.delete(job_id)

    @on_class_too
    def requeue(self, job_id: str) -> bool:
        """Queue a failed (or lost) job again; False if there is none."""
        return self.runner.requeue(job_id)

    @on_class_too
    def state(self, job_id: str) -> JobState:
        """The job's state in Hangfire's names (``Deleted`` when the job system no longer has it)."""
        return self.runner.state(job_id)


class RecurringJob:
    """Cron jobs (Hangfire's ``RecurringJob``), fired once per tick by the schedules duty that every
    ``flowjobs worker`` and ``flowjobs scheduler`` runs; on an instance or on the class, as
    ``BackgroundJob``."""

    def __init__(self, runner: JobRunner | None = None) -> None:
        self.runner = _runner(runner)
        if not isinstance(self.runner, KeepsRecurringJobs):
            raise TypeError(f"{type(self.runner).__name__} keeps no recurring jobs (no `schedules`)")
        self.jobs = RecurringJobs(self.runner.schedules, self.runner)

    @on_class_too
    def add_or_update(
        self,
        /,
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
        self.jobs.add_or_update(recurring_id, job_call(func, args, kwargs), cron, time_zone=time_zone)

    @on_class_too
    def remove_if_exists(self, recurring_id: str) -> bool:
        """Remove it (jobs it already enqueued stay); False if there was none."""
        return self.jobs.remove(recurring_id)

    @on_class_too
    def trigger(self, recurring_id: str) -> str:
        """Enqueue it once now, keeping its schedule; returns the job id."""
        return self.jobs.trigger(recurring_id)

    @on_class_too
    def list(self) -> list[RecurringJobInfo]:
        """Every recurring job: cron, zone, next and last execution, last job id, paused."""
        return self.jobs.list()
