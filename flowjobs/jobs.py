"""The job functions RQ executes, at the dotted paths every queued job names (the calls that name
them are built in ``flowjobs.core.job_calls``), and the engine they run on.

Jobs carry only ids (JSON): everything else is read from the store, so a job that runs twice,
or late, finds the current state and acts on it (or is refused by the claim).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import rq

from flowjobs.core.job_calls import JobFailed, failure_text, job_result
from flowjobs.core.outcomes import StepOutcome
from flowjobs.runtime.current import running_job_id

if TYPE_CHECKING:
    from flowjobs.engine import Engine

_engine: Engine | None = None


def install_engine(engine: Engine | None) -> None:
    """Make ``engine`` the one this process's jobs use (None: build from settings on first use)."""
    global _engine
    _engine = engine


def installed_engine() -> Engine | None:
    """The engine this process's jobs use, if one is installed or built already."""
    return _engine


def current_engine() -> Engine:
    """The installed engine, built from settings (and handler modules) on first use."""
    global _engine
    if _engine is None:
        from flowjobs.factory import engine_from_settings

        _engine = engine_from_settings()
    return _engine


def current_job_id() -> str | None:
    """Id of the job being executed, in RQ or in the in-process runner."""
    job_id = running_job_id()
    if job_id is not None:
        return job_id
    job = rq.get_current_job()
    return str(job.id) if job is not None else None


def run_trigger(run_id: str, flow_id: str | None = None, flow_name: str | None = None) -> str:
    """RQ job: execute a run's trigger (start it, dispatch entry steps). ``flow_id`` and
    ``flow_name`` are the run's (``trigger_call``); a job queued before they were passed has
    neither, and the run's hash is read for them."""
    flow = {"flow_id": flow_id, "flow_name": flow_name or ""} if flow_id else None
    status = current_engine().start_run(run_id, job_id=current_job_id(), flow=flow)
    return status.value if status else "missing"


def run_step(run_id: str, step_key: str, attempt: int, manifest_hash: str | None = None) -> Any:
    """RQ job: execute one attempt of one step.

    The job ends as RQ shows jobs to people: a failed attempt's job fails (``JobFailed``: RQ's failed
    registry, the reason and the handler's traceback as its exception info; flowjobs has already
    recorded it and scheduled any retry, so RQ must not retry it), a succeeded attempt's job returns
    the step's output (up to ``MAX_RESULT_BYTES``), any other returns its ``StepOutcome``. A job
    refused at its claim (late, repeated, or requeued by hand) says why in its meta
    (``flowjobs_note``).
    """
    report = current_engine().execute_step(
        run_id, step_key, int(attempt), job_id=current_job_id(), manifest_hash=manifest_hash
    )
    if report.failed:
        raise JobFailed(failure_text(report.error, report.traceback))
    job = rq.get_current_job()
    if report.error and job is not None:
        job.meta["flowjobs_note"] = report.error
        job.save_meta()  # type: ignore[no-untyped-call]
    if report.outcome is StepOutcome.succeeded:
        return job_result(report.output_json)
    return str(report.outcome)
