"""Background job calls: what a job runner is asked to run (``JobCall``), the states it reports,
and flowjobs' own calls (a run's trigger job, a step attempt's job) with their deterministic ids.

Pure data: the runners in ``flowjobs.runtime`` execute these; ``flowjobs.jobs`` holds the functions
the calls name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from flowjobs.core.urls import run_ui_path

RUN_TRIGGER = "flowjobs.jobs.run_trigger"
RUN_STEP = "flowjobs.jobs.run_step"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: Run fields a step job carries in its meta, so its worker joins the run's trace (``flowjobs.tracing``).
TRACE_FIELDS = ("traceparent", "tracestate")


class JobFailed(Exception):
    """Raised by a job function to end its job as failed (RQ's failed registry, this message as the
    job's exception info) after it recorded everything itself: the job system must not retry it."""


def failure_text(error: str | None, traceback: str | None) -> str:
    """What a failed step attempt's job says as its failure: the reason, then the handler's traceback."""
    return f"{error}\n\n{traceback}" if traceback else str(error)


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
class JobWrites:
    """A job system's own bookkeeping of the job that executes a transition (started, finished or
    failed), done by that transition's script in the same call (``flowjobs/lua/rq_jobs.lua``)."""

    keys: tuple[str, ...]
    """Every key the bookkeeping touches, in the order the script reads them (declared in its KEYS)."""
    args: Mapping[str, Any]
    """JSON-able arguments of the bookkeeping (its keys go beside them as ``books_keys``)."""


class JobBooks(Protocol):
    """The bookkeeping a job system leaves to the scripts of the job it is executing now (an RQ
    worker's step job): what the claim writes as the job's start, and what a completion that
    ends the step writes as the job's end."""

    job_id: str

    def started(self) -> JobWrites | None:
        """Writes of the job's start, the job system then writing none itself; None once written."""
        ...

    def ended(self, output_json: str | None, failure: str | None) -> JobWrites | None:
        """Writes of the job's end: succeeded with the step's output, or failed (``failure``: the
        job's exception info, ``failure_text``); call ``ended_by_script`` once the script has done
        them. None: the job system ends this job itself."""
        ...

    def ended_by_script(self) -> None:
        """The completion script did the writes of ``ended``: the job system writes none itself."""
        ...


@dataclass(frozen=True)
class RecurringJobInfo:
    """One recurring job as ``RecurringJob.list`` lists it (Hangfire's recurring-job list)."""

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


#: A run's trigger job id is ``<0><run id><1>``.
TRIGGER_JOB_ID = ("fj-", "-trigger")


def trigger_job_id(run_id: UUID | str) -> str:
    """Id of a run's trigger job."""
    before, after = TRIGGER_JOB_ID
    return f"{before}{run_id}{after}"


#: A step attempt's job id is ``<0><run id><1><step key><2><attempt>`` when the step key is safe in
#: a job id (the usual case): step records store a job id only when it is not this one.
PLAIN_STEP_JOB_ID = ("fj-", "-s-", "-")


#: A job id that names its run: a trigger job's, or one of ``PLAIN_STEP_JOB_ID``'s form (whatever
#: the step key holds: the run id, a UUID, has a fixed length).
_RUN_JOB_ID = re.compile(
    rf"(?:{re.escape(PLAIN_STEP_JOB_ID[0])}|{re.escape(TRIGGER_JOB_ID[0])})"
    r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    rf"(?:{re.escape(TRIGGER_JOB_ID[1])}\Z|{re.escape(PLAIN_STEP_JOB_ID[1])})"
)


def run_of_job(job_id: str) -> str | None:
    """The run id a trigger or step job id names (``trigger_job_id``, ``PLAIN_STEP_JOB_ID``), or
    None: such ids are not in the reverse job index (``Keys.jobs``), other ids are."""
    named = _RUN_JOB_ID.match(job_id)
    return named.group(1) if named else None


def step_job_id(run_id: UUID | str, step_key: str, attempt: int) -> str:
    """Id of one attempt of one step; readable where the step key allows it."""
    safe = _UNSAFE.sub("_", step_key)[:40]
    if safe != step_key:
        safe = f"{safe}_{hashlib.sha1(step_key.encode()).hexdigest()[:8]}"
    return plain_step_job_id(run_id, safe, attempt)


def plain_step_job_id(run_id: UUID | str, step_key: str, attempt: int | str) -> str:
    """``PLAIN_STEP_JOB_ID`` filled in (``step_job_id`` of a safe step key)."""
    before, between, after = PLAIN_STEP_JOB_ID
    return f"{before}{run_id}{between}{step_key}{after}{attempt}"


def trigger_call(
    run_id: str, flow_id: str, flow_name: str | None, trace: Mapping[str, str] | None = None
) -> JobCall:
    """The trigger job of a run; ``trace`` (W3C ``traceparent``/``tracestate``) is the caller's
    trace context, under which the run's span starts. The run's flow id and name (as its hash holds
    them) ride in the job's arguments, so the job needs no read of them."""
    return JobCall(
        func=RUN_TRIGGER,
        args=(run_id, flow_id, flow_name or ""),
        job_id=trigger_job_id(run_id),
        description=f"flow={flow_name} run={run_id} trigger",
        meta={
            "flow_id": flow_id,
            "run_id": run_id,
            "step_key": None,
            "attempt": None,
            "run_url": run_ui_path(run_id),
            **(trace or {}),
        },
    )


def step_call(
    run_id: str,
    run_fields: Mapping[str, str],
    step_key: str,
    attempt: int,
    timeout_seconds: float | None = None,
) -> JobCall:
    """The job of one attempt of one step; it carries the run's pinned manifest hash, so the worker
    needs no extra read to find the step."""
    flow_id, flow_name = run_fields.get("flow_id"), run_fields.get("flow_name")
    return JobCall(
        func=RUN_STEP,
        args=(run_id, step_key, attempt, run_fields.get("manifest_hash")),
        job_id=step_job_id(run_id, step_key, attempt),
        description=f"flow={flow_name} run={run_id} step={step_key} attempt={attempt}",
        meta={
            "flow_id": flow_id,
            "run_id": run_id,
            "step_key": step_key,
            "attempt": attempt,
            # rq-dashboard shows the meta: the way back from a job to its run's page.
            "run_url": run_ui_path(run_id),
            **{name: run_fields[name] for name in TRACE_FIELDS if name in run_fields},
        },
        timeout_seconds=timeout_seconds,
    )


#: Largest step output a step job returns as its job result (the run record keeps any size).
MAX_RESULT_BYTES = 64 * 1024


def job_result(output_json: str | None) -> Any:
    """A step's output as its job's result, or a note of its size when it is larger than
    ``MAX_RESULT_BYTES`` (RQ keeps results in Redis; the run record keeps the whole output)."""
    if output_json is None:
        return None
    if len(output_json) > MAX_RESULT_BYTES:
        return {"flowjobs_note": f"output of {len(output_json)} bytes: see the run's step record"}
    return json.loads(output_json)
