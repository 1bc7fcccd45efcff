"""The HTTP API under ``/flows/api``: the routes of the reference system's dashboard, camelCase JSON.

Runs, steps, events and lineage are the store's own records (``flowjobs.core.records``) — the API
adds no second shape for them. Action routes answer small result objects (the reference's
``{runId, message}``-style shapes, extended). Actions and reads go through ``FlowClient``, the
operator's reads through its ``queries`` (counts, events, flow flags, the worker count, duty lag);
errors are flowjobs' typed errors, mapped to statuses once, in ``install_error_handlers``.

Links to rq-dashboard travel in headers, not in the records: every response carries
``X-Job-Url-Template`` (``<rq-dashboard>/view/job/{jobId}``), and a single run's response has a
``Link`` per job of it (``rel="job"``) and to its page in the flows UI (``rel="run"``).

Every error answer is JSON ``{detail, error}`` (plus ``errorId`` on a 500, the id of its log
record), and every status a route can answer is in its OpenAPI ``responses``. A request body must
be declared JSON (415 otherwise), and run ids are parsed as UUIDs before anything reads Redis.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, time
from enum import StrEnum
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from uuid import UUID

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from flowjobs.client import FlowClient, parse_run_id
from flowjobs.core.errors import (
    DataTooLarge,
    FlowDisabled,
    FlowjobsError,
    FlowNotFound,
    ReplicasNotAcknowledged,
    RunCancelled,
    RunNotActive,
    RunNotFound,
    ScheduleNotFound,
    SignalAlreadyDelivered,
    SignalBusy,
    SignalNotFound,
    StepNotFound,
    StepNotRetryable,
    TriggerNotFound,
)
from flowjobs.core.manifest import FlowDefinition, FlowManifest
from flowjobs.core.records import FlowRunRecord, FlowStepRecord, RunEvent, RunLineage
from flowjobs.core.schedules import ScheduleState
from flowjobs.core.stats import FlowStats
from flowjobs.core.statuses import RunStatus
from flowjobs.core.urls import API_PREFIX, rq_job_path, run_ui_path
from flowjobs.duties import HEARTBEAT_DUTY
from flowjobs.settings import Settings
from flowjobs.web.deps import AppSettings, AsyncRuns, Client
from flowjobs.web.failures import REDIS_UNREACHABLE, log_fault
from flowjobs.webhooks import shown_manifest

log = structlog.get_logger("flowjobs.web.api")

#: Largest page of runs, and largest offset (``skip`` costs a walk of the index: cursors do not).
MAX_PAGE = 500
MAX_SKIP = 10_000
#: Raw request bodies may be this many times ``FLOWJOBS_MAX_DATA_BYTES`` (pretty-printed JSON is
#: larger than its canonical encoding, which the limit measures), plus a little.
BODY_SLACK_FACTOR = 2
BODY_SLACK_BYTES = 1024
JOB_URL_TEMPLATE_HEADER = "X-Job-Url-Template"

#: What each typed error means in HTTP; the most specific class wins (the exception's MRO).
ERROR_STATUS: dict[type[FlowjobsError], int] = {
    FlowNotFound: 404,
    TriggerNotFound: 404,
    RunNotFound: 404,
    StepNotFound: 404,
    ScheduleNotFound: 404,
    SignalNotFound: 404,
    FlowDisabled: 409,
    RunNotActive: 409,
    StepNotRetryable: 409,
    RunCancelled: 409,
    SignalAlreadyDelivered: 409,
    SignalBusy: 409,
    DataTooLarge: 413,
    ReplicasNotAcknowledged: 503,
}
#: Any other typed error is bad input (invalid trigger data, signal payload, cron expression…).
BAD_INPUT_STATUS = 422
#: Methods whose requests carry no body flowjobs reads (no Content-Type rule for them).
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_JSON_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"description": "Any JSON value (optional)."}}},
    }
}


class ApiModel(BaseModel):
    """Result shapes of the action routes: camelCase in JSON, like the records."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Unauthorized(ApiModel):
    """The answer of a request without valid credentials."""

    detail: str


class ApiError(ApiModel):
    """Every error answer: what went wrong, its kind (a flowjobs error class such as ``RunNotFound``,
    or ``InvalidJson``, ``UnsupportedMediaType``, ``ValidationError``, ``RedisUnavailable``,
    ``InternalError``…) and, on a 500, the id of the log record with its traceback."""

    detail: str
    error: str
    error_id: str | None = None


#: What each error status of the API means (OpenAPI ``responses``).
ERROR_MEANING = {
    400: "The body is not JSON, or holds a number too large to read",
    401: "No valid credentials (when FLOWJOBS_WEB_TOKEN or FLOWJOBS_WEB_USER is set)",
    404: "No such flow, trigger, run (a run id that is not a UUID included), step, schedule or signal",
    409: "The flow's or the run's state does not allow it",
    413: "The body or its data is over FLOWJOBS_MAX_DATA_BYTES or FLOWJOBS_MAX_DATA_DEPTH",
    415: "A body whose Content-Type is not application/json (or application/*+json)",
    422: "Invalid parameters or data",
    500: "Internal error: errorId names the log record with the traceback",
    503: "Redis cannot be reached",
}


def _answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {
        status: {"model": Unauthorized if status == 401 else ApiError, "description": ERROR_MEANING[status]}
        for status in statuses
    }


#: The errors of a route that changes state: unknown target, state conflict, a body not declared
#: JSON, bad input.
_ACTION = (404, 409, 415, 422)


def _job_link(settings: Settings, job_id: str) -> str:
    """A job's rq-dashboard page: absolute when the settings know where it is, else the path of
    this process's own (the web process serves it, so the link is right relative to the request)."""
    return settings.job_url(job_id) or rq_job_path(job_id)


async def _job_url_template(response: Response, settings: AppSettings) -> None:
    """Every API response says where a job's rq-dashboard page is."""
    response.headers[JOB_URL_TEMPLATE_HEADER] = _job_link(settings, "{jobId}")


def _is_json_media(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _json_bodies_only(request: Request) -> None:
    """415 for a request body not declared JSON: a cross-site page can send ``text/plain`` or a form
    without a CORS preflight, never ``application/json``. A request without a body (``curl -X
    POST``) needs no Content-Type."""
    if request.method in BODYLESS_METHODS:
        return
    length = request.headers.get("content-length")
    has_body = "transfer-encoding" in request.headers or (length is not None and length.strip("0 ") != "")
    content_type = request.headers.get("content-type", "")
    if has_body and not _is_json_media(content_type):
        raise _Refused(415, "UnsupportedMediaType", f"a body must be application/json, not {content_type!r}")


router = APIRouter(
    dependencies=[Depends(_job_url_template), Depends(_json_bodies_only)], responses=_answers(401, 500, 503)
)

async def _parsed_run_id(
    run_id: Annotated[str, Path(description="A run id (a UUID).", json_schema_extra={"format": "uuid"})],
) -> UUID:
    """The path's run id as a UUID; 404 for anything else, before any Redis call (a run id is
    part of Redis key names: ``<id>:step:x`` would address a step's hash)."""
    return parse_run_id(run_id)


RunId = Annotated[UUID, Depends(_parsed_run_id)]
"""Route parameter type of a path's ``{run_id}``: a UUID, 404 ``RunNotFound`` otherwise."""


class FlowView(ApiModel):
    """A registered flow and whether it is enabled (the reference's FlowDefinition)."""

    id: UUID
    name: str
    version: str
    is_enabled: bool
    manifest: FlowManifest


class TriggerResult(ApiModel):
    """A triggered run (202), or the earlier run an idempotency key returned (200)."""

    run_id: UUID
    background_job_id: str
    created: bool
    message: str


class CancelResult(ApiModel):
    """Cancellation accepted: closed at once, or after the running steps finish."""

    success: bool
    accepted: bool
    closed_immediately: bool
    message: str
    run: FlowRunRecord


class RerunResult(ApiModel):
    """The new run of a re-run."""

    run_id: UUID
    source_run_id: UUID
    background_job_id: str
    message: str


class RetryResult(ApiModel):
    """The new attempt of a retried step."""

    success: bool
    message: str
    run_id: UUID
    step_key: str
    attempt: int
    job_id: str | None


class SignalResult(ApiModel):
    """A delivered signal: ``resumed`` parked steps, or ``kept`` for a step that parks later."""

    delivered: bool
    run_id: UUID
    signal: str
    delivery: str
    delivered_at: datetime


class ScheduleFired(ApiModel):
    """A schedule fired now."""

    success: bool
    message: str
    job_id: str
    run_id: UUID | None


class CronChange(ApiModel):
    """A runtime cron override (None: back to the flow file's expression)."""

    cron_expression: str | None


class StatusCounts(ApiModel):
    """Runs of one flow (or all) per status."""

    flow_id: UUID | None
    flow_name: str | None
    total: int
    by_status: dict[RunStatus, int]


class RunStats(ApiModel):
    """Overview counters (the reference's, over runs started today UTC) and counts per status and flow."""

    total_flows: int
    active_runs: int
    completed_today: int
    failed_today: int
    total: int
    by_status: dict[RunStatus, int]
    by_flow: list[StatusCounts]


class HealthStatus(StrEnum):
    """``ok``; ``degraded``: Redis answers but no worker is seen or duties lag; ``down``: no Redis."""

    ok = "ok"
    degraded = "degraded"
    down = "down"


class Health(ApiModel):
    """What ``GET /health`` checks."""

    status: HealthStatus
    redis: bool
    workers: int
    duties_active: bool
    duty_lag_seconds: float | None
    flows: int
    detail: str | None = None


# -- helpers -----------------------------------------------------------------------------------


def _utc(moment: datetime | None) -> datetime | None:
    """Naive query times are UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _require_run(client: FlowClient, run_id: UUID) -> FlowRunRecord:
    run = client.get_run(str(run_id))
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    return run


#: Characters a link target keeps as they are: RFC 3986's reserved ones and ``%`` (the target is a
#: URL already); anything else (spaces, quotes, ``<>``, controls, non-ASCII) is percent-encoded.
_URI_KEEP = "!#$%&'()*+,/:;=?@[]~"
#: A title sent as a quoted-string: printable ASCII without ``"`` and ``\``; any other goes as
#: RFC 8187's ``title*=UTF-8''…``.
_QUOTABLE_TITLE = re.compile(r"[ !#-\[\]-~]*")


def _link(target: str, rel: str, title: str | None = None) -> str:
    """One RFC 8288 link-value, whatever characters the target and title hold."""
    value = f'<{quote(target, safe=_URI_KEEP)}>; rel="{rel}"'
    if title is None:
        return value
    if _QUOTABLE_TITLE.fullmatch(title):
        return f'{value}; title="{title}"'
    return f"{value}; title*=UTF-8''{quote(title, safe='')}"


def _link_run(response: Response, settings: Settings, run: FlowRunRecord) -> None:
    """``Link`` headers: the run's page in the flows UI and the rq-dashboard page of each of its jobs."""
    links = [_link(run_ui_path(run.id), "run")]
    if run.background_job_id:
        links.append(_link(_job_link(settings, run.background_job_id), "job", "trigger"))
    for step in run.steps or []:
        if step.job_id:
            links.append(_link(_job_link(settings, step.job_id), "job", f"step {step.step_key}"))
    response.headers["Link"] = ", ".join(links)


async def _json_body(request: Request, settings: Settings) -> Any:
    """The request's JSON body (None when empty), read up to a cap: 413 past it, 400 if not JSON."""
    cap = settings.max_data_bytes * BODY_SLACK_FACTOR + BODY_SLACK_BYTES
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise DataTooLarge(f"request body of {declared} bytes is over {cap}", limit=cap, actual=int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise DataTooLarge(f"request body is over {cap} bytes", limit=cap, actual=len(body))
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError as error:  # not JSON, not UTF-8, or an integer over Python's 4,300 digits
        raise _Refused(400, "InvalidJson", f"request body is not JSON: {error}") from error
    except RecursionError as error:  # the parser recurses once per nesting level
        depth = settings.max_data_depth
        raise DataTooLarge(
            f"JSON nested too deeply (limit {depth})", limit=depth, actual=depth + 1
        ) from error


class _Refused(Exception):
    """A request the API refuses before acting: an unparsable body (400 ``InvalidJson``, as the
    reference's ``Invalid JSON payload``), a body not declared JSON (415)."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error


def _flow_view(client: FlowClient, definition: FlowDefinition) -> FlowView:
    return FlowView(
        id=definition.id,
        name=definition.name,
        version=definition.version,
        is_enabled=client.queries.flow_enabled(definition.id),
        manifest=shown_manifest(definition.manifest),  # webhook secrets masked
    )


# -- flows -------------------------------------------------------------------------------------


@router.get("/flows", tags=["flows"])
def list_flows(client: Client) -> list[FlowView]:
    """Every flow this web process loaded (``FLOWJOBS_FLOWS_DIR``), by name."""
    return [_flow_view(client, definition) for definition in client.flows.all()]


@router.get("/flows/{flow}", tags=["flows"], responses=_answers(404, 422))
def get_flow(flow: str, client: Client) -> FlowView:
    """One flow, by id or name."""
    return _flow_view(client, client.flows.get(flow))


@router.get("/flows/{flow}/stats", tags=["flows"], responses=_answers(404, 422))
def flow_stats(flow: str, client: Client) -> FlowStats:
    """One flow's health over the last 24 h: the figures of the flow page and ``flowjobs stats``."""
    return client.queries.flow_stats(client.flows.get(flow))


@router.post("/flows/{flow}/enable", tags=["flows"], responses=_answers(404, 415))
def enable_flow(flow: str, client: Client) -> FlowView:
    """Enable a flow: it can be triggered and its Cron schedules fire (persisted)."""
    return _flow_view(client, client.set_flow_enabled(flow, True))


@router.post("/flows/{flow}/disable", tags=["flows"], responses=_answers(404, 415))
def disable_flow(flow: str, client: Client) -> FlowView:
    """Disable a flow: every trigger is refused (409) and its Cron schedules do not fire."""
    return _flow_view(client, client.set_flow_enabled(flow, False))


@router.post(
    "/flows/{flow}/trigger",
    tags=["flows"],
    status_code=202,
    responses={
        200: {"model": TriggerResult, "description": "An earlier run had that idempotency key"},
        **_answers(400, 404, 409, 413, 415, 422),
    },
    openapi_extra=_JSON_BODY,
)
async def trigger_flow(
    flow: str,
    request: Request,
    response: Response,
    client: Client,
    settings: AppSettings,
    runs: AsyncRuns,
    trigger: Annotated[str, Query(description="Trigger key of the flow.")] = "manual",
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> TriggerResult:
    """Trigger a run: the JSON body is the trigger data; the request's headers are kept on the run
    (sensitive ones dropped). A repeated ``Idempotency-Key`` returns the first run (200)."""
    data = await _json_body(request, settings)
    headers = dict(request.headers)
    prepared = client.prepare_trigger(flow, trigger, data, headers, idempotency_key=idempotency_key)
    handle = await client.commit_trigger_async(prepared, runs)
    if not handle.created:
        response.status_code = 200
    response.headers["Location"] = f"{API_PREFIX}/runs/{handle.run_id}"
    return TriggerResult(
        run_id=handle.run_id,
        background_job_id=handle.background_job_id,
        created=handle.created,
        message="run triggered" if handle.created else "an earlier run had this idempotency key",
    )


# -- runs --------------------------------------------------------------------------------------


@router.get("/runs", tags=["runs"], responses=_answers(404, 422))
def list_runs(
    request: Request,
    response: Response,
    client: Client,
    flow: Annotated[str | None, Query(description="Flow id or name.")] = None,
    status: RunStatus | None = None,
    since: Annotated[datetime | None, Query(description="Runs started at or after (UTC if naive).")] = None,
    until: Annotated[datetime | None, Query(description="Runs started before (UTC if naive).")] = None,
    before: Annotated[UUID | None, Query(description="Cursor: runs older than this run id.")] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP, description="Offset paging (cursors are cheaper).")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> list[FlowRunRecord]:
    """Runs newest first, filtered. Paging: pass ``X-Next-Cursor`` (also in ``Link: rel="next"``) as
    ``before``, or use ``skip``; ``X-Total-Count`` counts every run matching the filters."""
    flow_id: UUID | None = None
    if flow is not None:
        # A flow id is taken as is (the runs of a flow no longer loaded stay listable); a name is looked up.
        flow_id = _as_uuid(flow) or client.flows.get(flow).id
    until_at, since_at = _utc(until), _utc(since)
    # `until` and a cursor are both upper bounds: a cursor run id pages inside [since, until).
    upper: UUID | datetime | None = before if before is not None else until_at
    runs = client.list_runs(
        flow_id=flow_id, status=status, limit=limit, before=upper, since=since_at, skip=skip
    )
    if until_at is not None and before is not None:
        runs = [run for run in runs if run.started_at < until_at]
    total = client.queries.count_runs(flow_ids=[flow_id], statuses=[status], before=until_at, since=since_at)
    response.headers["X-Total-Count"] = str(total[(str(flow_id) if flow_id else None, status)])
    if len(runs) == limit:
        cursor = str(runs[-1].id)
        response.headers["X-Next-Cursor"] = cursor
        query = {k: v for k, v in request.query_params.items() if k not in ("before", "skip")}
        query["before"] = cursor
        response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return runs


def _as_uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


@router.get("/runs/active", tags=["runs"], responses=_answers(422))
def active_runs(client: Client, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> list[FlowRunRecord]:
    """Pending and Running runs, newest first."""
    runs = client.list_runs(status=RunStatus.Running, limit=limit)
    runs += client.list_runs(status=RunStatus.Pending, limit=limit)
    runs.sort(key=lambda run: run.started_at, reverse=True)
    return runs[:limit]


@router.get("/runs/stats", tags=["runs"])
def run_stats(client: Client) -> RunStats:
    """Counts per status, overall and per loaded flow, and the reference's overview counters."""
    flows = client.flows.all()
    statuses = list(RunStatus)
    counts = client.queries.count_runs(flow_ids=[None, *(d.id for d in flows)], statuses=statuses)
    midnight = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    today = client.queries.count_runs(statuses=[RunStatus.Succeeded, RunStatus.Failed], since=midnight)

    def per_status(flow_id: UUID | None) -> dict[RunStatus, int]:
        key = str(flow_id) if flow_id else None
        return {status: counts[(key, status)] for status in statuses}

    overall = per_status(None)
    by_flow = [
        StatusCounts(flow_id=d.id, flow_name=d.name, total=sum(c.values()), by_status=c)
        for d in flows
        for c in [per_status(d.id)]
    ]
    return RunStats(
        total_flows=len(flows),
        active_runs=overall[RunStatus.Pending] + overall[RunStatus.Running],
        completed_today=today[(None, RunStatus.Succeeded)],
        failed_today=today[(None, RunStatus.Failed)],
        total=sum(overall.values()),
        by_status=overall,
        by_flow=by_flow,
    )


@router.get("/runs/{run_id}", tags=["runs"], responses=_answers(404, 422))
def get_run(run_id: RunId, response: Response, client: Client, settings: AppSettings) -> FlowRunRecord:
    """The run with its steps and every attempt of each."""
    run = client.get_run_detail(str(run_id))
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    _link_run(response, settings, run)
    return run


@router.get("/runs/{run_id}/steps", tags=["runs"], responses=_answers(404, 422))
def run_steps(run_id: RunId, client: Client) -> list[FlowStepRecord]:
    """The run's steps (with their attempts), in the order they started."""
    run = client.get_run_detail(str(run_id))
    if run is None:
        raise RunNotFound(f"no run with id {run_id}")
    return run.steps or []


@router.get("/runs/{run_id}/events", tags=["runs"], responses=_answers(404, 422))
def run_events(
    run_id: RunId,
    client: Client,
    skip: Annotated[int, Query(ge=0)] = 0,
    take: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> list[RunEvent]:
    """The run's event history, oldest first (its last ``FLOWJOBS_MAX_RUN_EVENTS`` events)."""
    _require_run(client, run_id)
    return client.queries.events(str(run_id))[skip : skip + take]


class CancelRequest(ApiModel):
    """Why the run is cancelled (optional)."""

    reason: str | None = None


@router.post("/runs/{run_id}/cancel", tags=["control"], responses=_answers(400, *_ACTION))
def cancel_run(run_id: RunId, client: Client, body: CancelRequest | None = None) -> CancelResult:
    """Cancel an active run (409 for a finished one): queued and parked steps are skipped, running
    ones finish, then it closes as Cancelled."""
    run = client.cancel(str(run_id), body.reason if body else None)
    closed = run.status is RunStatus.Cancelled
    return CancelResult(
        success=True,
        accepted=True,
        closed_immediately=closed,
        message="cancelled" if closed else "cancelling: running steps finish first",
        run=run,
    )


@router.post("/runs/{run_id}/rerun", tags=["control"], status_code=202, responses=_answers(413, *_ACTION))
def rerun(run_id: RunId, client: Client) -> RerunResult:
    """A new run of the same flow with the run's data and headers (``sourceRunId`` set)."""
    handle = client.rerun(str(run_id))
    return RerunResult(
        run_id=handle.run_id,
        source_run_id=run_id,
        background_job_id=handle.background_job_id,
        message=f"re-run of {run_id} triggered",
    )


@router.get("/runs/{run_id}/lineage", tags=["runs"], responses=_answers(404, 422))
def lineage(run_id: RunId, client: Client) -> RunLineage:
    """The runs this run was re-run from (nearest first) and the runs re-run from it."""
    return client.lineage(str(run_id))


@router.post(
    "/runs/{run_id}/steps/{step_key}/retry", tags=["control"], status_code=202, responses=_answers(*_ACTION)
)
def retry_step(
    run_id: RunId,
    step_key: str,
    client: Client,
    clear_cancel: Annotated[bool, Query(alias="clearCancel")] = False,
) -> RetryResult:
    """Queue a new attempt of a Failed step (409 if it is not Failed, or the run's cancel was
    requested and ``clearCancel`` is not set)."""
    retried = client.retry_step(str(run_id), step_key, clear_cancel=clear_cancel)
    return RetryResult(
        success=True,
        message=f"attempt {retried.attempt} of step {step_key} queued",
        run_id=run_id,
        step_key=step_key,
        attempt=retried.attempt,
        job_id=retried.job_id,
    )


@router.post(
    "/runs/{run_id}/signals/{signal_name}",
    tags=["control"],
    openapi_extra=_JSON_BODY,
    responses=_answers(400, 413, *_ACTION),
)
async def signal(
    run_id: RunId, signal_name: str, request: Request, client: Client, settings: AppSettings
) -> SignalResult:
    """Deliver a signal (the JSON body is its payload and the step's output): 404 if no step of the
    run waits for it, 409 if it was delivered before."""
    payload = await _json_body(request, settings)
    delivery = await run_in_threadpool(client.signal, str(run_id), signal_name, payload)
    return SignalResult(
        delivered=True,
        run_id=run_id,
        signal=signal_name,
        delivery=delivery,
        delivered_at=datetime.now(UTC),
    )


@router.get("/jobs/{job_id}/run", tags=["runs"], responses=_answers(404, 422))
def run_of_job(job_id: str, response: Response, client: Client, settings: AppSettings) -> FlowRunRecord:
    """The run an RQ job (trigger or step attempt) belongs to, for as long as the run is kept."""
    run = client.find_run_by_job(job_id)
    if run is None:
        raise RunNotFound(f"no run has job {job_id!r}")
    _link_run(response, settings, run)
    return run


# -- schedules ---------------------------------------------------------------------------------


def _summaries(client: FlowClient, states: list[ScheduleState]) -> list[dict[str, Any]]:
    enabled = {s.flow_id: client.queries.flow_enabled(str(s.flow_id)) for s in states if s.flow_id}
    return [s.summary(flow_enabled=not s.flow_id or enabled[s.flow_id]) for s in states]


@router.get("/schedules", tags=["schedules"])
def list_schedules(client: Client) -> list[dict[str, Any]]:
    """Every schedule: flows' Cron triggers and applications' recurring jobs (paused ones included)."""
    return _summaries(client, client.list_schedules())


@router.post(
    "/schedules/{schedule_id}/trigger", tags=["schedules"], status_code=202, responses=_answers(*_ACTION)
)
def trigger_schedule(schedule_id: str, client: Client) -> ScheduleFired:
    """Fire a schedule once now, paused or not (409 for a disabled flow's)."""
    fired = client.trigger_schedule(schedule_id)
    return ScheduleFired(
        success=True, message=f"fired {schedule_id}", job_id=fired.job_id, run_id=fired.run_id
    )


@router.post("/schedules/{schedule_id}/pause", tags=["schedules"], responses=_answers(*_ACTION))
def pause_schedule(schedule_id: str, client: Client) -> dict[str, Any]:
    """Stop a schedule firing (persisted; missed ticks are not caught up)."""
    return _summaries(client, [client.pause_schedule(schedule_id)])[0]


@router.post("/schedules/{schedule_id}/resume", tags=["schedules"], responses=_answers(*_ACTION))
def resume_schedule(schedule_id: str, client: Client) -> dict[str, Any]:
    """Fire again from the next tick."""
    return _summaries(client, [client.resume_schedule(schedule_id)])[0]


@router.put("/schedules/{schedule_id}/cron", tags=["schedules"], responses=_answers(400, *_ACTION))
def set_schedule_cron(schedule_id: str, change: CronChange, client: Client) -> dict[str, Any]:
    """Override the schedule's cron expression at runtime (null: clear the override); an invalid
    expression stores nothing (422)."""
    return _summaries(client, [client.set_schedule_cron(schedule_id, change.cron_expression)])[0]


# -- health ------------------------------------------------------------------------------------

#: Duties that never ran for this long while work is overdue make the process ``degraded``.
DUTY_LAG_LIMIT_SECONDS = 30.0


@router.get("/health", tags=["health"], responses={503: {"model": Health}})
def health(response: Response, client: Client, settings: AppSettings) -> Health:
    """Redis reachable, workers seen on the queue, duty lag (how overdue the oldest expired lease,
    run deadline or due schedule is: what the duties should have handled). Open without auth."""
    try:
        duty_lag, duties_active = client.queries.duty_lag(HEARTBEAT_DUTY)
        workers = client.queries.workers(settings.queue)
    except (RedisError, OSError) as error:
        # The error names Redis' host and port: for the log, not for this open route's answer.
        log.warning("web.health_redis_unavailable", error=repr(error))
        response.status_code = 503
        return Health(
            status=HealthStatus.down,
            redis=False,
            workers=0,
            duties_active=False,
            duty_lag_seconds=None,
            flows=len(client.flows),
            detail="Redis unavailable",
        )
    problems = []
    if workers == 0:
        problems.append(f"no worker on queue {settings.queue!r}")
    if duty_lag is not None and duty_lag > DUTY_LAG_LIMIT_SECONDS:
        problems.append(f"duties lag {duty_lag:.1f}s")
    return Health(
        status=HealthStatus.degraded if problems else HealthStatus.ok,
        redis=True,
        workers=workers,
        duties_active=duties_active,
        duty_lag_seconds=duty_lag,
        flows=len(client.flows),
        detail="; ".join(problems) or None,
    )


# -- errors --------------------------------------------------------------------------------------


def _status_of(error: FlowjobsError) -> int:
    for cls in type(error).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return BAD_INPUT_STATUS


def _error(status: int, error: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "error": error}, status_code=status, headers=headers)


def _in_api(request: Request) -> bool:
    return request.url.path.startswith(f"{request.scope.get('root_path', '')}{API_PREFIX}/")


async def _flowjobs_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FlowjobsError)
    return _error(_status_of(error), type(error).__name__, str(error))


async def _refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, _Refused)
    return _error(error.status, error.error, str(error))


async def _invalid_request(request: Request, error: Exception) -> Response:
    """422 ``{detail, error: ValidationError}`` under the API (the inputs are not echoed: a 5,000
    character run id stays in the request); FastAPI's own answer elsewhere."""
    assert isinstance(error, RequestValidationError)
    if not _in_api(request):
        return await request_validation_exception_handler(request, error)
    detail = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
    )
    return _error(422, "ValidationError", detail)


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's and FastAPI's own refusals (unknown path, method not allowed, an unreadable body)
    as ``{detail, error}`` under the API."""
    assert isinstance(error, HTTPException)
    if not _in_api(request):
        return await http_exception_handler(request, error)
    reason = HTTPStatus(error.status_code).phrase.title().replace(" ", "").replace("-", "")
    return _error(error.status_code, reason, str(error.detail), error.headers)


async def _redis_error(request: Request, error: Exception) -> JSONResponse:
    """503 when Redis cannot be reached; any other Redis error is an internal error."""
    if not isinstance(error, REDIS_UNREACHABLE):
        return await _internal_error(request, error)
    log.warning("web.redis_unavailable", path=request.url.path, error=repr(error))
    return _error(503, "RedisUnavailable", "Redis unavailable")


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    """JSON 500 for anything unexpected, with the id of the log record holding its traceback."""
    error_id = log_fault("web.internal_error", error, method=request.method, path=request.url.path)
    return JSONResponse(
        {
            "detail": f"internal error; the server log has it as {error_id}",
            "error": "InternalError",
            "errorId": error_id,
        },
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Errors as JSON ``{detail, error}``: flowjobs' typed errors (404 unknown flow/run/step/schedule/
    signal, 409 an action the state does not allow, 413 too large, 422 other bad input), 400
    unparsable JSON, 415 a body not declared JSON, 422 invalid parameters, 503 Redis unreachable,
    and 500 with an ``errorId`` (logged with the traceback) for any other error, Redis' included."""
    app.add_exception_handler(FlowjobsError, _flowjobs_error)
    app.add_exception_handler(_Refused, _refused)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RedisError, _redis_error)
    app.add_exception_handler(Exception, _internal_error)
